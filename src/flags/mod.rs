//! Feature flags in the OpenFeature flagd format: store, evaluator and OFREP handler.
