"""Wine cultivars from 13 chemical measurements: a realtime-ml model in one module.

The data is scikit-learn's wine data set (UCI Machine Learning Repository, Forina et al.,
PARVUS: 178 wines from three cultivars grown in the same region of Italy), bundled with
scikit-learn, so nothing is downloaded. The model is a standardising scaler and a
multinomial logistic regression, evaluated on a stratified 25% held-out split and by
5-fold cross-validation, then refitted on every wine and cached as an artifact.
"""


from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.contract import BatchLimits, ModelBase
from ml.errors import InvalidInput

NAME = "wine"
VERSION = "wine-cultivar-v1"
CULTIVARS = ("cultivar 1", "cultivar 2", "cultivar 3")
CODE_VERSION = "1"
SEED = 7


def _measure(low: float, high: float, what: str) -> Any:
    return Annotated[float, msgspec.Meta(ge=low, le=high, description=what)]


class WineQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The 13 laboratory measurements of one wine."""

    alcohol: _measure(8, 18, "Alcohol, % by volume (data: 11.0-14.8).")
    malic_acid: _measure(0, 10, "Malic acid, g/l (data: 0.7-5.8).")
    ash: _measure(0, 5, "Ash, g/l (data: 1.4-3.2).")
    alcalinity_of_ash: _measure(0, 50, "Alcalinity of ash (data: 10.6-30).")
    magnesium: _measure(0, 250, "Magnesium, mg/l (data: 70-162).")
    total_phenols: _measure(0, 6, "Total phenols (data: 1.0-3.9).")
    flavanoids: _measure(0, 8, "Flavanoids (data: 0.3-5.1).")
    nonflavanoid_phenols: _measure(0, 2, "Nonflavanoid phenols (data: 0.1-0.7).")
    proanthocyanins: _measure(0, 6, "Proanthocyanins (data: 0.4-3.6).")
    color_intensity: _measure(0, 20, "Colour intensity (data: 1.3-13).")
    hue: _measure(0, 3, "Hue (data: 0.5-1.7).")
    od280_od315: _measure(0, 6, "OD280/OD315 of diluted wines (data: 1.3-4.0).")
    proline: _measure(0, 3000, "Proline, mg/l (data: 278-1680).")


class WineResult(msgspec.Struct, frozen=True):
    """The most likely cultivar, its probability, and every cultivar's."""

    cultivar: Literal["cultivar 1", "cultivar 2", "cultivar 3"]
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)]
    probabilities: dict[str, float]


FIELDS = [f.name for f in msgspec.structs.fields(WineQuery)]


@dataclass(frozen=True)
class Trained:
    """The fitted pipeline and its evaluation (what the artifact cache stores)."""

    pipeline: Any
    evaluation: dict[str, Any]
    examples: list[list[float]]  # one held-out wine per cultivar


def train() -> Trained:
    """Evaluate on a stratified held-out split and by cross-validation, then fit on all."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import cross_val_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_wine()
    x, y = data.data, data.target

    def pipeline() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))

    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y,
                                                        random_state=SEED)
    held_out = pipeline().fit(x_train, y_train).predict(x_test)
    folds = cross_val_score(pipeline(), x, y, cv=5)
    evaluation = {
        "split": "stratified 75/25, random_state=7",
        "test_size": len(y_test),
        "accuracy": round(float(accuracy_score(y_test, held_out)), 4),
        "macro_f1": round(float(f1_score(y_test, held_out, average="macro")), 4),
        "cv5_accuracy_mean": round(float(folds.mean()), 4),
        "cv5_accuracy_std": round(float(folds.std()), 4),
    }
    examples = [x_test[list(y_test).index(k)].tolist() for k in range(3)]
    return Trained(pipeline().fit(x, y), evaluation, examples)


class WineModel(ModelBase[WineQuery, np.ndarray, WineResult]):
    """Classifies wines; a batch is one matrix through the pipeline."""

    name = NAME
    version = VERSION
    title = "Wine cultivar"
    icon = "wine_bar"
    Query = WineQuery
    Result = WineResult
    batch_limits = BatchLimits(max_batch=64, max_wait_ms=0.0, max_queue=512)

    def __init__(self, trained: Trained) -> None:
        self.pipeline = trained.pipeline
        self.evaluation = trained.evaluation
        self._examples = trained.examples

    def prepare(self, query: WineQuery) -> np.ndarray:
        """The measurements as a row; InvalidInput naming a missing or impossible one."""
        row = []
        for field in FIELDS:
            value = getattr(query, field, None)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not np.isfinite(value) or value < 0:
                raise InvalidInput(f"{field} must be a non-negative number", field=field)
            row.append(float(value))
        return np.array(row)

    def predict(self, items: Sequence[np.ndarray]) -> list[WineResult]:
        probabilities = self.pipeline.predict_proba(np.stack(items))
        results = []
        for row in probabilities:
            best = int(np.argmax(row))
            results.append(WineResult(CULTIVARS[best], float(row[best]),  # type: ignore[arg-type]
                                      {c: round(float(p), 6)
                                       for c, p in zip(CULTIVARS, row, strict=True)}))
        return results

    def examples(self) -> list[WineQuery]:
        return [WineQuery(**dict(zip(FIELDS, values, strict=True)))
                for values in self._examples]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": "wine cultivar (3 classes) from 13 chemical measurements: tabular data",
            "architecture": "standardising scaler + multinomial logistic regression (C=1)",
            "data": "scikit-learn's wine data set (UCI, Forina et al.): 178 wines of three "
                    "cultivars from one region of Italy; bundled with scikit-learn",
            "source": "sklearn.datasets.load_wine",
            "training": "evaluated on a stratified 25% held-out split and by 5-fold "
                        "cross-validation, then refitted on all 178 wines; cached",
            "evaluation": self.evaluation,
            "headline": {"label": "Held-out accuracy",
                         "value": f"{self.evaluation['accuracy']:.1%}",
                         "help": f"5-fold CV {self.evaluation['cv5_accuracy_mean']:.1%}"},
            "limits": "178 wines from one region and three cultivars: any other wine gets "
                      "one of these three labels; measurements outside the data's ranges "
                      "are extrapolation.",
        }


def build(settings: Settings, store: ArtifactStore) -> WineModel:
    """Train (or load from the cache) the wine model."""
    import sklearn

    trained = store.get_or_build(NAME, f"{CODE_VERSION}:sklearn-{sklearn.__version__}", train)
    return WineModel(trained)
