"""Particles: instances from masks (labelling), their measurement, and matching predicted to true
particles."""
