"""Synthetic domain-shift data: procedurally drawn persons seen by cameras of distinct styles.

Each *identity* is a cartoon person with a fixed body shape (height, width, head size, skin and
hair), clothing (upper and lower colours, a pattern such as stripes, checks, a chest logo or a
two-tone top; trousers, shorts or a skirt; shoes) and accessories (hat, shoulder bag,
backpack). Each *camera* of a domain has a fixed scene (background texture and layout), a
dominant viewpoint (front, back or side), a scale range and a photometric style (illumination
gain and gradient, colour cast, contrast, saturation, blur, sensor noise, resolution, JPEG
quality). A *domain* is a distribution over those camera styles:

* ``SyntheticA`` - bright daylight street scenes, neutral colours, sharp, little noise.
* ``SyntheticB`` - dim indoor scenes under coloured lamps: strong casts, low contrast, blur.
* ``SyntheticC`` - night surveillance: dark streets, blue/cyan cast, low resolution, heavy
  noise, vignetting.

Identity cues (clothing colours and patterns, accessories, body shape) are drawn from the same
distribution in every domain, so what a model learns on one domain transfers, while the global
style shift opens a domain gap like Market-1501 -> DukeMTMC. The files are written in the exact
Market-1501 tree and naming (``<root>/<Domain>/{bounding_box_train,query,bounding_box_test}/
0001_c1s1_000151_01.jpg``) and read back by the same parser as Market-1501. The shift families
(``SyntheticGlobal``, ``SyntheticLocal``: A's test split under one graded kind of shift) are in
:mod:`.shift`.

Modules: :mod:`.styles` (the domains' camera-style distributions), :mod:`.camera` (scenes and
camera effects), :mod:`.render` (identities, drawing a person, the shift hooks),
:mod:`.writer` (the tree, its manifest and its atomic materialization) and :mod:`.shift` (the
shift families). The registered data sets that read these trees are in
:mod:`reid_pbn.data.datasets.synthetic`.
"""

from .render import GENERATOR_VERSION
from .shift import (
    SHIFT_FAMILIES,
    SHIFT_VERSION,
    SOURCE,
    check_strength,
    generate_shifted,
    shift_folder,
    shift_statistics,
)
from .styles import DOMAIN_STYLES, DomainStyle
from .writer import MANIFEST, SPLIT_DIRS, generate_domain

__all__ = [
    "DOMAIN_STYLES",
    "GENERATOR_VERSION",
    "MANIFEST",
    "SHIFT_FAMILIES",
    "SHIFT_VERSION",
    "SOURCE",
    "SPLIT_DIRS",
    "DomainStyle",
    "check_strength",
    "generate_domain",
    "generate_shifted",
    "shift_folder",
    "shift_statistics",
]
