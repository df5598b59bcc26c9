"""What a grocery recommendation may contain: the catalogue policy, product types, and
department names people can read.

The 84.51 data is a till roll, not a shelf: beside groceries it holds fuel bought at the
petrol station, coupons, gift cards, key rings and products with no description at all.
Those are not things a shopper wants suggested, so recommendations leave them out unless
the caller asks for their department by name (`context.category`). And a list of ten with
four kinds of milk is one suggestion, not four: by default a list holds one product of each
product type (the data's sub-commodity, whose sizes and forms count as one), which a query
may relax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# department -> why it is not groceries
EXCLUDED_DEPARTMENTS = {
    "FUEL": "fuel at the petrol station",
    "COUPON": "coupons",
    "MISCELLANEOUS": "gift cards, key rings, store supplies and unlabelled sales",
    "UNKNOWN": "products with no department",
    "CNTRL/STORE SUP": "store supplies",
}
# product categories (the data's commodity) that are till entries rather than products,
# whatever department they are filed under
EXCLUDED_CATEGORIES = frozenset({"COUPON/MISC ITEMS", "COUPON", "COUPONS/STORE & MFG"})

POLICY = ("Grocery recommendations leave out fuel, coupons, gift cards and till entries "
          "(departments " + ", ".join(sorted(EXCLUDED_DEPARTMENTS)) + "; categories "
          + ", ".join(sorted(EXCLUDED_CATEGORIES)) + ") and products with no category, "
          "unless context.category names their department. A list holds at most one product "
          "of each product type (sub-commodity; its sizes and forms, such as EGGS - LARGE and "
          "EGGS - X-LARGE, count as one) unless per_type allows more.")

DEPARTMENT_NAMES = {
    "AUTOMOTIVE": "Automotive",
    "CHARITABLE CONT": "Charitable giving",
    "CHEF SHOPPE": "Chef's counter",
    "CNTRL/STORE SUP": "Store supplies",
    "COSMETICS": "Cosmetics",
    "COUPON": "Coupons",
    "DELI": "Deli",
    "DRUG GM": "Drugstore",
    "ELECT &PLUMBING": "Electrical & plumbing",
    "FLORAL": "Flowers",
    "FROZEN GROCERY": "Frozen",
    "FUEL": "Fuel",
    "GARDEN CENTER": "Garden centre",
    "GM MERCH EXP": "General merchandise",
    "GROCERY": "Grocery",
    "HOUSEWARES": "Housewares",
    "MEAT": "Meat",
    "MEAT-PCKGD": "Packaged meat",
    "MISCELLANEOUS": "Miscellaneous",
    "NUTRITION": "Health foods",
    "PASTRY": "Bakery",
    "PHOTO & VIDEO": "Photo & video",
    "POSTAL CENTER": "Post office",
    "PROD-WHS SALES": "Produce (wholesale)",
    "PRODUCE": "Fruit & veg",
    "RESTAURANT": "Restaurant",
    "SALAD BAR": "Salad bar",
    "SEAFOOD": "Seafood",
    "SEAFOOD-PCKGD": "Packaged seafood",
    "SPIRITS": "Spirits",
    "TOYS": "Toys",
    "TRAVEL & LEISURE": "Travel & leisure",
    "UNKNOWN": "Unknown department",
}


def department_name(code: str) -> str:
    """A department's name for people ("MEAT-PCKGD" -> "Packaged meat")."""
    key = str(code).strip().upper()
    return DEPARTMENT_NAMES.get(key) or key.replace("-", " ").capitalize()


def exclusion(department: str, category: str) -> str:
    """Why the policy leaves a product out of grocery recommendations ("": it does not)."""
    if department in EXCLUDED_DEPARTMENTS:
        return EXCLUDED_DEPARTMENTS[department]
    if category in EXCLUDED_CATEGORIES:
        return "coupons and till entries"
    if not category:
        return "products with no category"
    return ""


def admissions(departments: Sequence[str] | np.ndarray, exclusions: Sequence[str] | np.ndarray
               ) -> dict[tuple[str | None, bool], np.ndarray]:
    """What a list may hold, per (department asked for or None, policy applied?): a read-only
    mask over the products. Asking for a department the policy leaves out lists it all."""
    codes = np.array([str(d).upper() for d in departments])
    grocery = np.asarray(exclusions) == ""
    masks: dict[tuple[str | None, bool], np.ndarray] = {
        (None, True): grocery, (None, False): np.ones(len(codes), dtype=bool)}
    for department in np.unique(codes).tolist():
        own = codes == department
        masks[department, False] = own
        masks[department, True] = own if department in EXCLUDED_DEPARTMENTS else own & grocery
    for mask in masks.values():
        mask.setflags(write=False)
    return masks


def group_codes(labels: Sequence[str], fallback: Sequence[object]) -> np.ndarray:
    """An integer per distinct label (a product type, a category); products without one
    get a group of their own (keyed by `fallback`, their id)."""
    keys = [label if label else f"#{own}" for label, own in zip(labels, fallback, strict=True)]
    _, codes = np.unique(np.array(keys, dtype=str), return_inverse=True)
    return codes.astype(np.int32)
