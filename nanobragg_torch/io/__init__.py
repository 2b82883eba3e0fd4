"""Readers and writers for nanoBragg.c's file formats (numpy), plus MTZ/mmCIF in (gemmi) and miniCBF and
NeXus/NXmx out (fabio, h5py); those libraries are imported only when such a file is read or written. See
docs/formats.md."""

from nanobragg_torch.io.atomic import atomic_write
from nanobragg_torch.io.cbf import CBFHeader, cbf_bytes, write_cbf
from nanobragg_torch.io.fdump import fdump_bytes, read_fdump, write_fdump
from nanobragg_torch.io.floatimage import read_float_image, write_float_image
from nanobragg_torch.io.hkl import read_hkl_file
from nanobragg_torch.io.mosflm import mosflm_matrix_text, parse_mosflm_matrix, read_mosflm_matrix
from nanobragg_torch.io.nexus import (
    BeamGeometry,
    GoniometerGeometry,
    mcstas_rotation,
    panels_from_geometry,
    read_nxmx_images,
    write_nxmx,
)
from nanobragg_torch.io.pgm import pgm_bytes, read_pgm, write_pgm
from nanobragg_torch.io.reflections import read_structure_factors
from nanobragg_torch.io.smv import (
    SMVHeader,
    parse_smv_header,
    read_smv,
    smv_bytes,
    smv_header_text,
    smv_value,
    write_smv,
)
from nanobragg_torch.io.textcolumns import c_atof, c_strtod, parse_text_columns, read_text_columns

__all__ = [
    "BeamGeometry",
    "CBFHeader",
    "GoniometerGeometry",
    "SMVHeader",
    "atomic_write",
    "cbf_bytes",
    "c_atof",
    "c_strtod",
    "fdump_bytes",
    "mcstas_rotation",
    "mosflm_matrix_text",
    "panels_from_geometry",
    "parse_mosflm_matrix",
    "parse_smv_header",
    "parse_text_columns",
    "pgm_bytes",
    "read_fdump",
    "read_float_image",
    "read_hkl_file",
    "read_mosflm_matrix",
    "read_nxmx_images",
    "read_pgm",
    "read_smv",
    "read_structure_factors",
    "read_text_columns",
    "smv_bytes",
    "smv_header_text",
    "smv_value",
    "write_cbf",
    "write_fdump",
    "write_float_image",
    "write_nxmx",
    "write_pgm",
    "write_smv",
]
