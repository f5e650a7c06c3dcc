"""fer-train: data loaders, model builders, fit, evaluate, report and tune (Keras 3, any backend)."""
