"""A stand-in for the core layer: importable only if the runner put the layer's directory on sys.path."""

LAYER_MARKER = "core-layer-on-sys-path"
