"""In-process latency of each model: the floor every other call path is compared against."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.stats import summarize
from ml.registry import Registry


def timed(fn: Callable[[Any], object], inputs: Sequence[Any], repeat: int) -> list[float]:
    """Wall time of `fn(x)` for each input, cycling through `inputs` `repeat` times in all."""
    times = []
    for i in range(repeat):
        item = inputs[i % len(inputs)]
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return times


def run(registry: Registry, *, quick: bool = False) -> dict[str, Any]:
    """Measure every model in-process, as a serving process runs them (one BLAS thread:
    ml.threads); returns the result tree."""
    from ml.samples import sample_photos
    from ml.sentiment_training import load_corpus
    from ml.threads import single_threaded_blas

    single_threaded_blas()
    n = 300 if quick else 5000
    results: dict[str, Any] = {}

    sentiment = registry.get("sentiment")
    texts, _ = load_corpus()
    tweets = [t for t in texts[::7] if 60 <= len(t) <= 140][:2000]
    pipeline = sentiment.pipeline  # type: ignore[attr-defined]
    # first sight: each text once, with no word's spelling found before but the training
    # words' (what a fresh server pays for text unlike any it has answered)
    sentiment.scorer._spell.cache_clear()  # type: ignore[attr-defined]
    first = summarize(timed(sentiment.predict_one, tweets, len(tweets)))  # type: ignore[attr-defined]
    fast = summarize(timed(sentiment.predict_one, tweets, n))  # type: ignore[attr-defined]
    stock = summarize(timed(lambda t: pipeline.predict_proba([t]), tweets, max(100, n // 10)))
    batch = tweets[:1000] if len(tweets) >= 1000 else (tweets * 2)[:1000]
    batch_times = timed(lambda b: sentiment.classify(b), [batch], 5 if quick else 20)  # type: ignore[attr-defined]
    results["sentiment"] = {
        "single_text": fast,
        "single_text_first_sight": first,
        "cnn_share": round(sum(sentiment.scorer.blended(tweets)) / len(tweets), 3),  # type: ignore[attr-defined]
        "sklearn_pipeline_single_text": stock,
        "speedup_vs_sklearn_p50": round(stock["p50_ms"] / fast["p50_ms"], 1),
        "batch_1000_texts": summarize(batch_times),
        "text_chars_median": sorted(len(t) for t in tweets)[len(tweets) // 2],
    }

    image = registry.get("image")
    photos = sample_photos()
    decoded = [image.decode(p) for p in photos]  # type: ignore[attr-defined]
    pixels = [p.pixels for p in decoded]
    image.warmup()
    reps = 20 if quick else 200
    image_results: dict[str, Any] = {
        "forward_only": summarize(timed(lambda x: image.probabilities([x]),  # type: ignore[attr-defined]
                                        pixels, reps)),
        "decoded_image_end_to_end": summarize(
            timed(lambda p: image.predict_one(p, top_k=5), photos, reps)),  # type: ignore[attr-defined]
    }
    for size in (4, 8):
        batch = (pixels * size)[:size]
        per_batch = timed(lambda b: image.probabilities(b), [batch],  # type: ignore[attr-defined]
                          5 if quick else 30)
        image_results[f"batch_{size}_per_image"] = {
            k: (round(v / size, 4) if k.endswith("_ms") else v)
            for k, v in summarize(per_batch).items()}
    results["image"] = {"device": image.device,  # type: ignore[attr-defined]
                        "runtime": image.forward.runtime,  # type: ignore[attr-defined]
                        "threads": registry.settings.torch_threads or "runtime default",
                        **image_results}

    recommender = registry.get("recommender")
    users = recommender.known_users()  # type: ignore[attr-defined]
    results["recommender"] = {
        "top10_known_household": summarize(timed(recommender.recommend, users, n)),  # type: ignore[attr-defined]
        "top10_with_category": summarize(timed(
            lambda u: recommender.recommend(u, category="PRODUCE"), users, n)),  # type: ignore[attr-defined]
        "top10_unknown_household": summarize(timed(
            recommender.recommend, [f"new-{i}" for i in range(50)], n)),  # type: ignore[attr-defined]
    }
    return results
