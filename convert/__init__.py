"""fer-convert: Keras model -> TFLite variants, with an accuracy gate run through the edge classifier."""
