"""Physical constants and units: the one home of each, with nanoBragg.c's values where the C has one."""

from __future__ import annotations

# nanoBragg.c's constants (its variable names)
R_E_SQR = 7.94079248018965e-30  # r_e_sqr: Thomson cross section (m^2)
DEFAULT_FLUENCE = 125932015286227086360700780544.0  # fluence default (photons/m^2)
AVOGADRO = 6.02214179e23
WATER_F = 2.57  # water_F: forward structure factor of water (electrons)
WATER_MW = 18.0  # water_MW (g/mol)
SOURCE_DISTANCE = 10.0  # source_distance (m)

# angles: the C's RTD = 180.0*M_1_PI (degrees = radians*RTD, radians = degrees/RTD). Every conversion, the C's
# and ours (file formats, refinement), uses it, so an angle read from a file and the same angle given as a flag
# are the same double (math.radians may differ in the last bit).
RTD = 180.0 * 0.31830988618379067154
