"""The pmacct-compatible query client of the memory plugin (`pmengine client`, `pmacct`)."""
