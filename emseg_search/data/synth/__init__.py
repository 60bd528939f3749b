"""The embedded synthetic EM generator: shapes, rendering, the default data set, a montage."""
