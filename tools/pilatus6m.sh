#!/bin/sh
# The seed's Pilatus 6M render (golden case full_pilatus6m in golden/cases.toml; tests/test_docs.py keeps the
# two equal) on the shared reference inputs: A.mat and scaled.hkl from $NB_SHARED_DATA (default: ../shared/data
# beside this checkout). Writes img.bin (floats) and int.img (SMV) in the current folder; extra flags follow,
# e.g.  tools/pilatus6m.sh -dtype float64 -progress   or   tools/pilatus6m.sh -roi 1000 1100 600 700
# Its pixel (slow 685, fast 1039): add -trace_pixel 685 1039 (the C: -printout_pixel 1039 685).
set -e
here=$(cd "$(dirname "$0")" && pwd -P)/..
shared=${NB_SHARED_DATA:-$here/../shared/data}
for f in pilatus_6m/A.mat pilatus_6m/scaled.hkl; do
    [ -f "$shared/$f" ] || { echo "pilatus6m.sh: $shared/$f not found (set NB_SHARED_DATA)" >&2; exit 2; }
done
exec nanobragg -mat "$shared/pilatus_6m/A.mat" -floatfile img.bin -hkl "$shared/pilatus_6m/scaled.hkl" \
    -nonoise -nointerpolate -oversample 1 -exposure 1 -flux 1e18 -beamsize 1.0 -spindle_axis -1 0 0 \
    -Xbeam 217.742295 -Ybeam 213.907080 -distance 231.274660 -lambda 0.976800 -pixel 0.172 \
    -detpixels_x 2463 -detpixels_y 2527 -odet_vector -0.000088 0.004914 -0.999988 \
    -sdet_vector -0.005998 -0.999970 -0.004913 -fdet_vector 0.999982 -0.005998 -0.000118 \
    -pix0_vector_mm -216.336293 215.205512 -230.200866 -beam_vector 0.00051387949 0.0 -0.99999986 \
    -Na 36 -Nb 47 -Nc 29 -osc 0.1 -phi 0 -phisteps 10 -detector_rotx 0 -detector_roty 0 -detector_rotz 0 \
    -twotheta 0 -noprogress -nopgm -intfile int.img "$@"
