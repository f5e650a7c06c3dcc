"""fer-edge runtime: camera -> face detection -> tracking -> int8 emotion classifier -> logs.

Imports no TensorFlow: this is all a Raspberry Pi installs.
"""
__version__ = "0.1.0"
