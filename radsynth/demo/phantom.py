"""Procedural lateral cervical-spine radiograph phantoms, written as a CSXA-format demo atlas.

Why: demo mode must exercise every path the real Cervical Spine X-ray Atlas takes through the
pipeline (7-digit stems, LabelMe point files with CSXA's quirks, negatives, 16-bit and colour
PNGs, odd non-square sizes) without the 2.7 GB download, in seconds, byte-identical per seed.

Each phantom is a lateral view with C2 (dens) to C7 vertebral bodies as rounded quadrilaterals
on a lordotic, straight or kyphotic curve, disc gaps, articular pillars, laminae and spinous
processes, the C1 arches, occiput, mastoid, clivus, maxilla with teeth, mandible and hyoid,
neck soft tissue with the airway anterior to the spine, the shoulders and a clavicle. The film
is an exponential attenuation of summed tissue and bone densities with window, gamma, blur,
unsharp masking, noise and, on some films, a bright collimation band. It is drawn facing right
and mirrored for left-facing films; about `negative_fraction` of films are stored inverted.

What it does NOT model: real bone texture or trabecular architecture, degenerative change
(osteophytes, disc narrowing, listhesis), fractures, implants and hardware, lead side markers
and burnt-in text, patient motion, grid lines, scatter, the heel effect, the transverse
processes and the far-side (bilateral) doubling of the pillars and mandible, paediatric
anatomy, and the true distribution of CSXA's sizes, curvature classes and exposure settings.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from radsynth.core.atomic import atomic_directory, atomic_output
from radsynth.core.config import load_settings
from radsynth.core.settings.data import DemoAtlasSettings
from radsynth.data.csxa import (
    KEYPOINT_LABELS,
    METADATA_ID_COLUMN,
    METADATA_SPACING_COLUMN,
    make_stem,
)

#: Vertebral levels drawn with keypoints, top to bottom.
LEVELS: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7")
CURVATURES: tuple[str, ...] = ("lordotic", "straight", "kyphotic")
#: Demo choice, not CSXA's distribution (CSXA's sheet holds the real curvature classes).
CURVATURE_WEIGHTS: tuple[float, ...] = (0.6, 0.25, 0.15)
#: Signed C2-C7 angle change in degrees per class; negative bends the column convex-anterior.
COBB_RANGE_DEG: dict[str, tuple[float, float]] = {
    "lordotic": (-40.0, -12.0),
    "straight": (-5.0, 5.0),
    "kyphotic": (8.0, 25.0),
}
#: Spinous process length per level (C2..C7) in body depths: C2 bulky, C7 the prominens.
SPINOUS_LENGTHS: tuple[float, ...] = (1.1, 0.7, 0.7, 0.8, 1.0, 1.4)
#: LabelMe writes its version into every file; CSXA readers must not depend on its value.
LABELME_VERSION = "5.2.1"
#: A duplicated label lands in one of the first images, so every atlas of >= 20 holds exactly one.
DUPLICATE_WINDOW = 20
#: Chance a file stores one (or, a third of those, two) keypoints as one-point polygons.
POLYGON_QUIRK_RATE = 0.06
#: Chance a film shows a bright collimation band on some of its edges.
BORDER_RATE = 0.3
#: zlib level of the written PNGs: 1 is four times faster than PIL's 6 for 10% larger files.
PNG_COMPRESS_LEVEL = 1
#: Anteroposterior depth of an adult C3-C7 vertebral body, mm: the phantoms' unit of length
#: (`Anatomy.unit` px), which sets their pixel spacing.
BODY_DEPTH_MM = 16.0
#: The demo atlas's per-image metadata table, in the layout of CSXA's sheet (as CSV).
METADATA_NAME = "metadata.csv"

Point = tuple[float, float]


@dataclass(frozen=True)
class Anatomy:
    """Patient geometry in canonical (facing right, y down) pixels; lengths in body depths."""

    unit: float  # px: AP depth of a C3..C7 body (BODY_DEPTH_MM)
    column_top: Point  # px: the spine axis at the top of the C2 body
    tilt_deg: float  # mean direction of the column from vertical; negative = C7 posterior
    cobb_deg: float  # signed angle change from C2 to C7
    body_heights: tuple[float, ...]  # C2..C7
    body_depths: tuple[float, ...]  # C2..C7
    dens_height: float
    disc_height: float
    wedge: float  # anterior height loss of C3..C7 as a fraction
    concavity: float  # endplate dip as a fraction of body height
    spinous_lengths: tuple[float, ...]  # C2..C7
    spinous_droop: float  # caudal drop of a spinous tip per unit of length
    prevertebral: tuple[float, float]  # soft tissue before the spine at C2-C4 and at C6-C7
    airway_width: float
    neck_front: float  # soft tissue anterior to the airway
    neck_back: float  # spine axis to the nape skin
    mandible_offset: Point
    shoulder_drop: float  # shoulder centre below the C7 body
    shoulder_density: float  # extra tissue thickness of the shoulders, relative


@dataclass(frozen=True)
class Exposure:
    """How densities become grey values: attenuation, display window and detector effects."""

    tissue: float
    bone: float
    airway: float  # fraction of the neck's tissue attenuation the air column removes
    tissue_gradient: float  # thickening of the soft tissue from top to bottom
    beam: float  # attenuation scale inside 1 - exp(-beam * density)
    window: tuple[float, float]
    gamma: float
    blur_sigma: float  # px
    sharpen_sigma: float  # px
    sharpen_amount: float
    noise_sigma: float
    texture: float  # relative modulation of bone density
    border: tuple[int, int, int, int]  # collimation band width in px: top, bottom, left, right
    border_level: float


@dataclass(frozen=True)
class PhantomParams:
    width: int
    height: int
    facing: str  # "left" | "right": where the patient's face points
    curvature: str
    negative: bool  # stored inverted: bone dark, air bright
    rotation_deg: float
    anatomy: Anatomy
    exposure: Exposure


def mm_per_pixel(params: PhantomParams) -> float:
    """The film's pixel spacing (square pixels): a C3-C7 body of `unit` px is BODY_DEPTH_MM
    deep."""
    return BODY_DEPTH_MM / params.anatomy.unit


@dataclass(frozen=True)
class Phantom:
    image: np.ndarray  # float32 (height, width) in [0, 1], as displayed (inverted if negative)
    keypoints: dict[str, Point]  # CSXA label -> (x, y) in image pixels


@dataclass(frozen=True)
class Shape:
    """A filled polygon (optional cortex outline) or an open thick line, in pixels."""

    points: np.ndarray
    fill: float
    outline: float | None = None
    width: float = 1.0
    closed: bool = True


@dataclass(frozen=True)
class Scene:
    air: list[Shape]  # regions outside the body, cut out of the tissue layer
    airway: list[Shape]
    shoulders: list[Shape]
    bone_groups: list[list[Shape]]  # groups add up; shapes within a group overwrite
    keypoints: dict[str, Point]


@dataclass(frozen=True)
class Frame:
    """Local axes: a along `normal` (anterior), d along `tangent` (caudal), from `origin`;
    the axes' length sets the unit (pixels for a vertebra, body depths for the head)."""

    origin: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray

    def world(self, local: np.ndarray) -> np.ndarray:
        local = np.asarray(local, dtype=float).reshape(-1, 2)
        return self.origin + local[:, :1] * self.normal + local[:, 1:] * self.tangent


@dataclass(frozen=True)
class SpineCurve:
    """The spine axis by arclength s (px, 0 at the top of C2), for frames and offset lines."""

    s: np.ndarray
    xy: np.ndarray
    theta: np.ndarray  # direction from straight down; positive heads anterior

    def frame(self, s: float) -> Frame:
        theta = float(np.interp(s, self.s, self.theta))
        origin = np.array(
            [np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])]
        )
        tangent = np.array([math.sin(theta), math.cos(theta)])
        return Frame(origin, tangent, np.array([tangent[1], -tangent[0]]))

    def offset(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Points a px anterior of the axis at arclengths s."""
        theta = np.interp(s, self.s, self.theta)
        x = np.interp(s, self.s, self.xy[:, 0]) + a * np.cos(theta)
        y = np.interp(s, self.s, self.xy[:, 1]) - a * np.sin(theta)
        return np.stack([x, y], axis=1)


@dataclass(frozen=True)
class Storage:
    """How a film is written: its PIL mode and the code value white maps to."""

    mode: str  # "L", "I;16", "RGB", "RGBA" or "LA"
    value_max: int  # 255; for "I;16" 4095 (12-bit detector codes) or 65535 (full range)

    @property
    def bit_depth(self) -> int:
        return 16 if self.mode == "I;16" else 8


# ---------------------------------------------------------------- parameter sampling


def sample_params(
    rng: np.random.Generator, *, min_side: int, max_side: int, negative: bool
) -> PhantomParams:
    """Draw one film's size, pose, anatomy and exposure; `negative` is decided by the caller."""
    height = int(rng.integers(min_side, max_side + 1))
    aspect = rng.uniform(0.95, 1.35)  # lateral c-spine films are taller than wide or near square
    width = int(np.clip(round(height / aspect), min_side, max_side))
    curvature = CURVATURES[int(rng.choice(len(CURVATURES), p=CURVATURE_WEIGHTS))]
    facing = "left" if rng.random() < 0.5 else "right"
    rotation = rng.uniform(-6.0, 6.0)
    anatomy = _sample_anatomy(rng, width, height, curvature)
    exposure = _sample_exposure(rng, width, height, anatomy.unit)
    return PhantomParams(width, height, facing, curvature, negative, rotation, anatomy, exposure)


def _sample_anatomy(rng: np.random.Generator, width: int, height: int, curvature: str) -> Anatomy:
    body_heights = (1.35 * rng.uniform(0.92, 1.08), *(0.8 * rng.uniform(0.9, 1.1, size=5)))
    body_depths = (1.05 * rng.uniform(0.95, 1.05), *rng.uniform(0.93, 1.07, size=5))
    dens_height, disc = rng.uniform(0.65, 0.85), rng.uniform(0.2, 0.32)
    column_units = dens_height + sum(body_heights) + 5 * disc
    column_fraction = rng.uniform(0.55, 0.72)  # dens tip to C7 bottom, share of the film height
    unit = column_fraction * height / column_units
    tip_y = rng.uniform(0.08, 0.95 - column_fraction) * height
    top = (rng.uniform(0.45, 0.6) * width, tip_y + dens_height * unit)
    return Anatomy(
        unit=unit,
        column_top=top,
        tilt_deg=rng.uniform(-12.0, 4.0),
        cobb_deg=rng.uniform(*COBB_RANGE_DEG[curvature]),
        body_heights=tuple(float(h) for h in body_heights),
        body_depths=tuple(float(d) for d in body_depths),
        dens_height=dens_height,
        disc_height=disc,
        wedge=rng.uniform(-0.03, 0.12),
        concavity=rng.uniform(0.0, 0.06),
        spinous_lengths=tuple(
            float(v) for v in np.array(SPINOUS_LENGTHS) * rng.uniform(0.85, 1.15, 6)
        ),
        spinous_droop=rng.uniform(0.2, 0.45),
        prevertebral=(rng.uniform(0.2, 0.4), rng.uniform(0.7, 1.1)),
        airway_width=rng.uniform(0.6, 0.95),
        neck_front=rng.uniform(1.0, 1.8),
        neck_back=rng.uniform(4.8, 7.0),
        mandible_offset=(rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3)),
        shoulder_drop=rng.uniform(0.5, 2.5),
        shoulder_density=rng.uniform(0.3, 0.7),
    )


def _sample_exposure(rng: np.random.Generator, width: int, height: int, unit: float) -> Exposure:
    side = min(width, height)
    has_border = rng.random() < BORDER_RATE
    band = rng.uniform(0.008, 0.025, size=4) * side
    sides = rng.random(4) < 0.5
    border = tuple(int(round(b)) if (has_border and s) else 0 for b, s in zip(band, sides))
    return Exposure(
        tissue=rng.uniform(0.25, 0.4),
        bone=rng.uniform(0.6, 0.9),
        airway=rng.uniform(0.4, 0.7),
        tissue_gradient=rng.uniform(0.0, 0.5),
        beam=rng.uniform(0.8, 1.6),
        window=(rng.uniform(-0.06, 0.06), rng.uniform(0.9, 1.1)),
        gamma=math.exp(rng.uniform(math.log(0.7), math.log(1.4))),
        blur_sigma=rng.uniform(0.35, 0.9) * side / 256,
        sharpen_sigma=unit * rng.uniform(0.4, 1.2),
        sharpen_amount=rng.uniform(0.0, 0.9),
        noise_sigma=rng.uniform(0.005, 0.03),
        texture=rng.uniform(0.05, 0.2),
        border=border,
        border_level=rng.uniform(0.85, 1.0),
    )


# ---------------------------------------------------------------- geometry


def _spine_curve(anatomy: Anatomy) -> SpineCurve:
    """Integrate a direction that turns linearly by the Cobb angle from C2 to C7."""
    u = anatomy.unit
    length = u * (sum(anatomy.body_heights) + 5 * anatomy.disc_height)
    s = np.linspace(-8 * u, length + 14 * u, 400)
    tilt, cobb = math.radians(anatomy.tilt_deg), math.radians(anatomy.cobb_deg)
    theta = tilt - cobb / 2 + cobb * np.clip(s, 0.0, length) / length
    direction = np.stack([np.sin(theta), np.cos(theta)], axis=1)
    steps = np.diff(s)[:, None] * (direction[:-1] + direction[1:]) / 2
    xy = np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)])
    at_top = np.array([np.interp(0.0, s, xy[:, 0]), np.interp(0.0, s, xy[:, 1])])
    return SpineCurve(s, xy - at_top + np.asarray(anatomy.column_top), theta)


@dataclass(frozen=True)
class Vertebra:
    level: str
    s: float  # arclength of the body centre, px
    frame: Frame
    depth: float  # px
    height: float  # px


def _vertebrae(anatomy: Anatomy, curve: SpineCurve) -> list[Vertebra]:
    """C2..C7 bodies stacked along the curve, then T1 and T2 (drawn, never annotated)."""
    u = anatomy.unit
    heights = (*anatomy.body_heights, 0.85, 0.9)
    depths = (*anatomy.body_depths, 1.08, 1.12)
    vertebrae, s_top = [], 0.0
    for level, height, depth in zip((*LEVELS, "T1", "T2"), heights, depths):
        centre = s_top + height * u / 2
        vertebrae.append(Vertebra(level, centre, curve.frame(centre), depth * u, height * u))
        s_top += (height + anatomy.disc_height) * u
    return vertebrae


def _ellipse(centre: Sequence[float], rx: float, ry: float, n: int = 24) -> np.ndarray:
    phi = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + rx * np.cos(phi), centre[1] + ry * np.sin(phi)], axis=1)


def _corner_arc(centre: np.ndarray, radius: float, start: float, n: int = 4) -> np.ndarray:
    phi = start + np.linspace(0.0, np.pi / 2, n)
    return centre + radius * np.stack([np.cos(phi), np.sin(phi)], axis=1)


_CORNERS = (
    ("bottom anterior", 1, 1),
    ("bottom posterior", -1, 1),
    ("top posterior", -1, -1),
    ("top anterior", 1, -1),
)


def _rounded_rect(
    depth: float, height: float, radius: float
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Corner arcs of a body outline (a anterior, d caudal) going round, and where a reader
    clicks each corner: the middle of its arc."""
    arcs, clicks = [], {}
    for quarter, (name, sa, sd) in enumerate(_CORNERS):
        centre = np.array([sa * (depth / 2 - radius), sd * (height / 2 - radius)])
        arcs.append(_corner_arc(centre, radius, quarter * np.pi / 2))
        clicks[name] = centre + radius * np.array([sa, sd]) / math.sqrt(2)
    return arcs, clicks


def _deform_body(
    local: np.ndarray, depth: float, height: float, wedge: float, concavity: float
) -> np.ndarray:
    """Wedge the anterior wall shorter and dip both endplates towards the body's middle."""
    a, d = local[:, 0], local[:, 1]
    d = d * (1 - wedge * (a / depth + 0.5))
    dip = (
        concavity
        * height
        * np.clip(1 - (2 * a / depth) ** 2, 0.0, None)
        * (np.abs(d) > 0.3 * height)
    )
    return np.stack([a, d - np.sign(d) * dip], axis=1)


def _c2_outline(v: Vertebra, anatomy: Anatomy) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """C2 body with the dens rising from its upper edge, leaning slightly back."""
    u, w, h = anatomy.unit, v.depth, v.height
    arcs, clicks = _rounded_rect(w, h, 0.15 * min(w, h))
    half, centre_a, lean = 0.21 * u, -0.08 * u, -0.1 * u
    apex = np.array([centre_a + lean, -h / 2 - anatomy.dens_height * u + half])
    phi = np.linspace(np.pi, 2 * np.pi, 7)
    cap = apex + half * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    dens = np.vstack([[centre_a - half * 1.15, -h / 2], cap, [centre_a + half * 1.15, -h / 2]])
    return np.vstack([*arcs[:3], dens, arcs[3]]), clicks


def _body(v: Vertebra, anatomy: Anatomy) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """World outline of a vertebral body and its annotated corners (C2: its centre too)."""
    if v.level == "C2":
        outline, clicks = _c2_outline(v, anatomy)
        clicks = {**clicks, "centroid": np.zeros(2)}
    else:
        arcs, clicks = _rounded_rect(v.depth, v.height, 0.15 * min(v.depth, v.height))
        shaped = _deform_body(
            np.vstack([*arcs, *clicks.values()]),
            v.depth,
            v.height,
            anatomy.wedge,
            anatomy.concavity,
        )
        outline, clicks = shaped[: -len(clicks)], dict(zip(clicks, shaped[-len(clicks) :]))
    return v.frame.world(outline), {k: v.frame.world(p)[0] for k, p in clicks.items()}


def _posterior_elements(v: Vertebra, spinous_length: float, anatomy: Anatomy) -> list[np.ndarray]:
    """Pedicle, articular pillar, lamina with spinous process and its tip, behind one body."""
    u, w, h = anatomy.unit, v.depth, v.height
    pillar_a = -w / 2 - 0.55 * u
    pillar = [
        (pillar_a + 0.3 * u, -h / 2 - 0.1 * u),
        (pillar_a - 0.3 * u, -h / 2 + 0.2 * u),
        (pillar_a - 0.3 * u, h / 2 + 0.35 * u),
        (pillar_a + 0.3 * u, h / 2 + 0.05 * u),
    ]
    wall = -w / 2 + 0.05 * u
    pedicle = [(wall, -0.28 * h), (pillar_a, -0.28 * h), (pillar_a, 0.12 * h), (wall, 0.12 * h)]
    base, length = pillar_a - 0.2 * u, spinous_length * u
    tip_d, tip_half = (
        0.35 * h + anatomy.spinous_droop * length,
        (0.3 if v.level == "C2" else 0.15) * u,
    )
    lamina = [
        (base + 0.1 * u, -0.3 * h),
        (base - length, tip_d - tip_half),
        (base - length, tip_d + tip_half),
        (base + 0.1 * u, 0.35 * h + 0.2 * u),
    ]
    tip = _ellipse((base - length, tip_d), tip_half + 0.08 * u, tip_half + 0.05 * u, 12)
    return [v.frame.world(np.array(part)) for part in (pillar, pedicle, lamina, tip)]


def _atlas_c1(c2: Vertebra, anatomy: Anatomy) -> tuple[list[Shape], list[Shape]]:
    """C1: its lateral masses (a faint block over the dens) and its anterior and posterior
    arches."""
    u, w, h = anatomy.unit, c2.depth, c2.height
    dens_mid = -h / 2 - 0.45 * u
    mass = c2.frame.world(
        np.array(
            [
                (-0.85 * u, dens_mid - 0.4 * u),
                (0.35 * u, dens_mid - 0.45 * u),
                (0.35 * u, dens_mid + 0.35 * u),
                (-0.85 * u, dens_mid + 0.45 * u),
            ]
        )
    )
    front = c2.frame.world(_ellipse((w / 2 + 0.25 * u, dens_mid), 0.26 * u, 0.36 * u, 16))
    back = c2.frame.world(_ellipse((-w / 2 - 1.9 * u, dens_mid - 0.1 * u), 0.6 * u, 0.23 * u, 16))
    arches = [Shape(front, 0.5, 0.9, 0.08 * u), Shape(back, 0.5, 0.9, 0.08 * u)]
    return [Shape(mass, 0.22)], arches


def _spine_shapes(
    vertebrae: list[Vertebra], anatomy: Anatomy
) -> tuple[list[Shape], dict[str, np.ndarray]]:
    """Posterior elements first, bodies over them; returns the bone shapes and the annotated
    points."""
    u = anatomy.unit
    lengths = (*anatomy.spinous_lengths, 1.6, 1.6)
    shapes: list[Shape] = []
    for v, length in zip(vertebrae, lengths):
        shapes += [
            Shape(part, 0.35, 0.65, 0.07 * u) for part in _posterior_elements(v, length, anatomy)
        ]
    points: dict[str, np.ndarray] = {}
    for v in vertebrae:
        outline, clicks = _body(v, anatomy)
        shapes.append(Shape(outline, 0.5, 0.95, max(1.0, 0.08 * u)))
        if v.level in LEVELS:
            points.update({f"{v.level} {k}": p for k, p in clicks.items()})
    return shapes, points


def _head_frame(c2: Vertebra, anatomy: Anatomy) -> Frame:
    """Axes at the dens tip, in body depths, turning with the upper spine so the head follows
    flexion."""
    u = anatomy.unit
    tip = c2.frame.world(np.array([-0.18 * u, -c2.height / 2 - anatomy.dens_height * u]))[0]
    return Frame(tip, c2.frame.tangent * u, c2.frame.normal * u)


def _skull_shapes(head: Frame, unit: float) -> list[Shape]:
    """Posterior fossa, mastoid, clivus and the occipital bone's two tables above the dens."""
    occiput = [(-1.3, -0.65), (-2.8, -0.95), (-5.0, -2.1), (-7.5, -4.5), (-9.5, -7.0)]
    vault = [(-12, -10), (4, -10), (1.6, -3.4), (0.1, -0.55), *occiput, (-12, -8)]
    inner = [(-1.8, -1.25), (-3.2, -1.6), (-5.0, -2.8), (-7.0, -4.9), (-8.6, -7.0)]
    return [
        Shape(head.world(np.array(vault)), 0.22),
        Shape(head.world(_ellipse((-1.4, -1.7), 1.1, 0.75)), 0.38),
        Shape(
            head.world(np.array([(0.1, -0.55), (0.9, -2.0), (1.5, -3.4)])),
            0.45,
            width=0.7 * unit,
            closed=False,
        ),
        Shape(head.world(np.array(inner)), 0.65, width=0.18 * unit, closed=False),
        Shape(head.world(np.array(occiput)), 0.9, width=0.45 * unit, closed=False),
    ]


def _teeth(head: Frame, row_d: float, start: float, stop: float, offset: np.ndarray) -> list[Shape]:
    return [
        Shape(head.world(_ellipse(np.array([a, row_d]) + offset, 0.2, 0.42, 12)), 0.95)
        for a in np.arange(start, stop, 0.4)
    ]


def _face_shapes(head: Frame, anatomy: Anatomy) -> list[Shape]:
    """Maxilla with palate and upper teeth, the mandible (moving with the jaw) and the hyoid."""
    u, jaw = anatomy.unit, np.asarray(anatomy.mandible_offset)
    mandible = (
        np.array(
            [
                (0.6, -2.4),
                (1.3, 1.9),
                (2.5, 2.3),
                (5.0, 2.1),
                (6.3, 1.8),
                (6.8, 1.0),
                (6.5, 0.1),
                (3.4, 0.0),
                (2.7, -0.4),
                (2.5, -1.8),
                (1.7, -1.4),
                (1.2, -2.3),
            ]
        )
        + jaw
    )
    hyoid = _ellipse(np.array([3.0, 3.5]) + jaw / 2, 0.55, 0.18, 12)
    return [
        Shape(
            head.world(np.array([(1.6, -3.4), (4, -10), (12, -10), (12, -0.95), (2.3, -0.9)])), 0.22
        ),
        Shape(head.world(np.array([(2.2, -1.0), (6.4, -1.15)])), 0.85, width=0.3 * u, closed=False),
        *_teeth(head, -0.55, 3.7, 6.5, np.zeros(2)),
        Shape(head.world(mandible), 0.4, 0.85, max(1.0, 0.16 * u)),
        *_teeth(head, 0.4, 3.7, 6.2, jaw),
        Shape(head.world(hyoid), 0.6, 0.9, max(1.0, 0.08 * u)),
    ]


def _airway_walls(
    s: np.ndarray, vertebrae: list[Vertebra], anatomy: Anatomy
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior and anterior walls of the air column, px anterior of the spine axis at arclengths
    s:
    a thin prevertebral stripe down to C4, thicker below; narrowest at the larynx; the
    nasopharynx bends forward above C1 and the trachea drifts forward below C6."""
    u = anatomy.unit
    c2, c4, c5, c6 = (vertebrae[i].s for i in (0, 2, 3, 4))
    prevertebral = np.interp(s, [c4, c6], anatomy.prevertebral) * u
    width = (
        anatomy.airway_width * u * np.interp(s, [c2, c4 + 0.3 * u, c5, c6], [1.0, 0.7, 0.75, 0.9])
    )
    forward = 0.8 * np.clip(-0.5 * u - s, 0.0, None) + 0.12 * np.clip(s - c6, 0.0, None)
    back = 0.5 * u + prevertebral + forward
    return back, back + width


def _airway(curve: SpineCurve, vertebrae: list[Vertebra], anatomy: Anatomy) -> np.ndarray:
    s = np.linspace(-2.2 * anatomy.unit, vertebrae[-1].s + 10 * anatomy.unit, 60)
    back, front = _airway_walls(s, vertebrae, anatomy)
    return np.vstack([curve.offset(s, back), curve.offset(s[::-1], front[::-1])])


def _front_air(
    curve: SpineCurve, vertebrae: list[Vertebra], anatomy: Anatomy, head: Frame
) -> np.ndarray:
    """The air in front of the neck: below the chin, before the throat, above the chest."""
    u, c4, c7 = anatomy.unit, vertebrae[2].s, vertebrae[5].s
    chin = head.world(
        np.array([(7.4, 1.0), (6.6, 2.4), (5.0, 2.75), (3.9, 3.2)]) + anatomy.mandible_offset
    )
    s = np.linspace(c4, c7 + 8 * u, 30)
    _, airway_front = _airway_walls(s, vertebrae, anatomy)
    skin = curve.offset(
        s, airway_front + anatomy.neck_front * u + 0.7 * np.clip(s - c7 - u, 0.0, None)
    )
    far = 40 * u
    return np.vstack([chin, skin, skin[-1] + (far, far), (chin[0, 0] + far, chin[0, 1])])


def _back_air(
    curve: SpineCurve, vertebrae: list[Vertebra], anatomy: Anatomy, head: Frame
) -> np.ndarray:
    """The air behind the scalp and the (slightly concave) nape."""
    u, c2, c7 = anatomy.unit, vertebrae[0].s, vertebrae[5].s
    scalp = head.world(np.array([(-12.0, -9.0), (-8.2, -4.0), (-6.0, -1.6)]))
    s = np.linspace(c2, c7 + 8 * u, 24)
    concave = 0.4 * u * np.sin(np.pi * np.clip((s - c2) / (c7 - c2), 0.0, 1.0))
    skin = curve.offset(s, -anatomy.neck_back * u + concave - 0.5 * np.clip(s - c7, 0.0, None))
    far = 40 * u
    return np.vstack([scalp, skin, skin[-1] + (-far, far), (scalp[0, 0] - far, scalp[0, 1])])


def _shoulder_shapes(
    curve: SpineCurve, vertebrae: list[Vertebra], anatomy: Anatomy
) -> tuple[list[Shape], Shape]:
    """The shoulders as extra soft tissue over the cervicothoracic junction (nested ellipses
    for a soft edge), and a clavicle crossing it obliquely."""
    u, level = anatomy.unit, vertebrae[5].s + anatomy.shoulder_drop * anatomy.unit
    centre = curve.offset(np.array([level + 1.5 * u]), np.array([-1.0 * u]))[0]
    shells = [
        Shape(_ellipse(centre, 7 * u * (1 - 0.02 * k), 2.3 * u * (1 - 0.05 * k), 32), (k + 1) / 8)
        for k in range(8)
    ]
    clavicle = curve.offset(level + np.array([2.5, 1.3, 0.3]) * u, np.array([3.5, 0.2, -3.0]) * u)
    return shells, Shape(clavicle, 0.35, width=0.45 * u, closed=False)


def _canonical_scene(params: PhantomParams) -> Scene:
    """Every structure facing right, before pose; keypoints still named anterior/posterior."""
    anatomy = params.anatomy
    curve = _spine_curve(anatomy)
    vertebrae = _vertebrae(anatomy, curve)
    head = _head_frame(vertebrae[0], anatomy)
    spine, points = _spine_shapes(vertebrae, anatomy)
    c1_masses, c1_arches = _atlas_c1(vertebrae[0], anatomy)
    shoulders, clavicle = _shoulder_shapes(curve, vertebrae, anatomy)
    return Scene(
        air=[
            Shape(_front_air(curve, vertebrae, anatomy, head), 0.0),
            Shape(_back_air(curve, vertebrae, anatomy, head), 0.0),
        ],
        airway=[Shape(_airway(curve, vertebrae, anatomy), 1.0)],
        shoulders=shoulders,
        bone_groups=[
            _skull_shapes(head, anatomy.unit),
            _face_shapes(head, anatomy),
            c1_masses,
            c1_arches + spine,
            [clavicle],
        ],
        keypoints=points,
    )


def _pose(points: np.ndarray, params: PhantomParams) -> np.ndarray:
    """Canonical pixels -> film pixels: a small rotation about the film centre, then the mirror."""
    centre = np.array([params.width / 2, params.height / 2])
    angle = math.radians(params.rotation_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    posed = (np.asarray(points, dtype=float).reshape(-1, 2) - centre) @ rotation.T + centre
    if params.facing == "left":
        posed[:, 0] = params.width - posed[:, 0]
    return posed


def _name_corners(points: dict[str, np.ndarray]) -> dict[str, Point]:
    """CSXA's left/right mean smaller/larger image x, whichever way the patient faces."""
    named: dict[str, Point] = {
        "C2 centroid": (float(points["C2 centroid"][0]), float(points["C2 centroid"][1]))
    }
    for level in LEVELS:
        for end in ("top", "bottom") if level != "C2" else ("bottom",):
            pair = sorted(
                (points[f"{level} {end} anterior"], points[f"{level} {end} posterior"]),
                key=lambda p: p[0],
            )
            named[f"{level} {end} left"] = (float(pair[0][0]), float(pair[0][1]))
            named[f"{level} {end} right"] = (float(pair[1][0]), float(pair[1][1]))
    return {label: named[label] for label in KEYPOINT_LABELS}


def build_scene(params: PhantomParams) -> Scene:
    """The film's shapes and its 23 CSXA keypoints, in film pixels."""
    scene = _canonical_scene(params)

    def posed(shapes: list[Shape]) -> list[Shape]:
        return [replace(shape, points=_pose(shape.points, params)) for shape in shapes]

    return Scene(
        air=posed(scene.air),
        airway=posed(scene.airway),
        shoulders=posed(scene.shoulders),
        bone_groups=[posed(group) for group in scene.bone_groups],
        keypoints=_name_corners({k: _pose(p, params)[0] for k, p in scene.keypoints.items()}),
    )


# ---------------------------------------------------------------- rasterising and exposure


def _draw(shapes: Sequence[Shape], width: int, height: int, background: float = 0.0) -> np.ndarray:
    """Rasterise shapes into one float layer; later shapes overwrite earlier ones."""
    layer = Image.new("F", (width, height), background)
    draw = ImageDraw.Draw(layer)
    for shape in shapes:
        xy = [(float(x), float(y)) for x, y in shape.points]
        line_width = max(1, int(round(shape.width)))
        if not shape.closed:
            draw.line(xy, fill=shape.fill, width=line_width, joint="curve")
            continue
        draw.polygon(xy, fill=shape.fill)
        if shape.outline is not None:
            draw.line(xy + xy[:1], fill=shape.outline, width=line_width, joint="curve")
    return np.array(layer)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Unit-variance-ish noise varying over about `cell` pixels (bicubic upsampling of a coarse
    grid)."""
    grid = rng.standard_normal((int(height / cell) + 3, int(width / cell) + 3)).astype(np.float32)
    return np.array(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with mirrored edges; direct taps beat an FFT at these radii."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).astype(np.float32)
    out = image.astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(
            out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="reflect"
        )
        length = out.shape[axis]
        out = sum(
            w * padded[(slice(None),) * axis + (slice(i, i + length),)] for i, w in enumerate(taps)
        )
    return out


def _detector_filter(
    film: np.ndarray, blur_sigma: float, sharpen_sigma: float, amount: float
) -> np.ndarray:
    """Detector blur, then unsharp masking whose wide surround is computed at a reduced
    resolution (it holds only low frequencies), which keeps large films fast."""
    height, width = film.shape
    blurred = _gaussian_blur(film, blur_sigma)
    factor = max(1, int(sharpen_sigma // 4))
    small = np.array(Image.fromarray(blurred).reduce(factor))
    surround = _gaussian_blur(small, sharpen_sigma / factor)
    surround = np.array(Image.fromarray(surround).resize((width, height), Image.Resampling.BICUBIC))
    return blurred + amount * (blurred - surround)


def _collimate(film: np.ndarray, border: tuple[int, int, int, int], level: float) -> np.ndarray:
    """Unexposed bands at the film edges (bright on a positive) left by the collimator."""
    top, bottom, left, right = border
    out = film.copy()
    out[:top], out[out.shape[0] - bottom :] = level, level
    out[:, :left], out[:, out.shape[1] - right :] = level, level
    return out


def _expose(scene: Scene, params: PhantomParams, rng: np.random.Generator) -> np.ndarray:
    """Densities -> film: exponential attenuation, quantum noise, window and gamma, detector
    filter."""
    e, w, h, unit = params.exposure, params.width, params.height, params.anatomy.unit
    tissue = _draw(scene.air, w, h, background=1.0)
    airway = _draw(scene.airway, w, h)
    shoulders = _draw(scene.shoulders, w, h)
    bone = sum(_draw(group, w, h) for group in scene.bone_groups)
    rows = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    drift, grain = _smooth_noise(rng, h, w, 3 * unit), _smooth_noise(rng, h, w, max(unit / 3, 1.0))
    soft = tissue * (1 + e.tissue_gradient * rows + 0.06 * drift - e.airway * airway)
    density = e.tissue * (soft + params.anatomy.shoulder_density * shoulders) + e.bone * bone * (
        1 + e.texture * grain
    )
    film = (
        -np.expm1(-e.beam * density) / -math.expm1(-e.beam * (1.2 * e.tissue + 1.5 * e.bone))
    ).astype(np.float32)
    film = film + rng.normal(0.0, e.noise_sigma, film.shape).astype(np.float32)
    low, high = e.window
    film = np.clip((film - low) / (high - low), 0.0, 1.0) ** e.gamma
    film = _collimate(
        _detector_filter(film, e.blur_sigma, e.sharpen_sigma, e.sharpen_amount),
        e.border,
        e.border_level,
    )
    return np.clip(1.0 - film if params.negative else film, 0.0, 1.0).astype(np.float32)


def render_phantom(rng: np.random.Generator, params: PhantomParams) -> Phantom:
    """One film as displayed (float32 in [0, 1], inverted if negative) and its 23 keypoints,
    with a reader's click scatter of about 1% of a body depth."""
    scene = build_scene(params)
    scatter = rng.normal(0.0, 0.012 * params.anatomy.unit, size=(len(KEYPOINT_LABELS), 2))
    keypoints = {
        label: (x + dx, y + dy)
        for (label, (x, y)), (dx, dy) in zip(scene.keypoints.items(), scatter)
    }
    return Phantom(
        _expose(scene, params, rng), {k: (float(x), float(y)) for k, (x, y) in keypoints.items()}
    )


# ---------------------------------------------------------------- storage in CSXA's format

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_SILVER = math.sqrt(2.0) - 1.0


def _stratified(seed: int, index: int, stream: int, step: float) -> float:
    """A Kronecker (low-discrepancy) draw in [0, 1): every prefix of an atlas holds any share to
    within three images (checked up to 500 images), and image i's draw never depends on n."""
    offset = float(np.random.default_rng([seed, 1, stream]).random())
    return (offset + (index + 1) * step) % 1.0


def is_negative(seed: int, index: int, negative_fraction: float) -> bool:
    """Whether film `index` is stored inverted (bone dark), stratified over the atlas."""
    return _stratified(seed, index, 0, _GOLDEN) < negative_fraction


def storage_for(seed: int, index: int, sixteen_bit_fraction: float, rgb_fraction: float) -> Storage:
    """16-bit films split between 12-bit-in-16 and full range; colour films are mostly RGB,
    with a few RGBA and LA, all grey replicated."""
    draw = _stratified(seed, index, 1, _SILVER)
    if draw < sixteen_bit_fraction:
        return Storage("I;16", 65535 if draw < sixteen_bit_fraction / 2 else 4095)
    if draw < sixteen_bit_fraction + rgb_fraction:
        within = (draw - sixteen_bit_fraction) / rgb_fraction
        return Storage("RGB" if within < 0.8 else "RGBA" if within < 0.9 else "LA", 255)
    return Storage("L", 255)


def encode_image(image: np.ndarray, storage: Storage) -> Image.Image:
    """A [0, 1] film as the PIL image a scanner or PACS export of that storage would write."""
    codes = np.round(np.clip(image, 0.0, 1.0) * storage.value_max)
    if storage.bit_depth == 16:
        return Image.fromarray(codes.astype(np.uint16))
    grey = codes.astype(np.uint8)
    opaque = np.full_like(grey, 255)
    channels = {
        "L": [grey],
        "RGB": [grey] * 3,
        "RGBA": [grey] * 3 + [opaque],
        "LA": [grey, opaque],
    }[storage.mode]
    return Image.fromarray(channels[0] if len(channels) == 1 else np.stack(channels, axis=-1))


def _labelme_shape(label: str, point: Point, shape_type: str) -> dict:
    return {
        "label": label,
        "points": [[round(point[0], 3), round(point[1], 3)]],
        "group_id": None,
        "shape_type": shape_type,
        "flags": {},
    }


def labelme_document(
    stem: str,
    keypoints: dict[str, Point],
    width: int,
    height: int,
    polygon_labels: Sequence[str],
    duplicate: tuple[str, Point] | None,
) -> dict:
    """One CSXA LabelMe file, quirks included: some points stored as one-point polygons and,
    in one file of the atlas, a label clicked twice."""
    shapes = []
    for label, point in keypoints.items():
        shapes.append(
            _labelme_shape(label, point, "polygon" if label in polygon_labels else "point")
        )
        if duplicate is not None and duplicate[0] == label:
            shapes.append(_labelme_shape(label, duplicate[1], "point"))
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": f"{stem}.png",
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }


# ---------------------------------------------------------------- the atlas


@dataclass(frozen=True)
class AtlasItem:
    stem: str
    image: Image.Image
    document: dict
    truth: dict


def duplicate_index(seed: int) -> int:
    """The one image whose file repeats a label; within the first DUPLICATE_WINDOW whatever n is."""
    return int(np.random.default_rng([seed, 2]).integers(DUPLICATE_WINDOW))


def _quirks(
    rng: np.random.Generator, keypoints: dict[str, Point], unit: float, duplicated: bool
) -> tuple[list[str], tuple[str, Point] | None]:
    """Which labels a file stores as polygons, and the repeated click if this is the duplicate
    file."""
    chance, picks = rng.random(), rng.choice(len(KEYPOINT_LABELS), size=2, replace=False)
    n_polygons = 0 if chance >= POLYGON_QUIRK_RATE else 2 if chance < POLYGON_QUIRK_RATE / 3 else 1
    polygon_labels = [KEYPOINT_LABELS[int(i)] for i in picks[:n_polygons]]
    label = KEYPOINT_LABELS[int(rng.integers(len(KEYPOINT_LABELS)))]
    angle, shift = rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.1) * unit
    x, y = keypoints[label]
    repeat = (x + shift * math.cos(angle), y + shift * math.sin(angle))
    return polygon_labels, ((label, repeat) if duplicated else None)


def build_atlas_item(settings: DemoAtlasSettings, index: int) -> AtlasItem:
    """Image `index` of the atlas, derived from (seed, index) alone."""
    rng = np.random.default_rng([settings.seed, 0, index])
    stem = make_stem(index + 1, int(rng.integers(18, 90)))
    negative = is_negative(settings.seed, index, settings.negative_fraction)
    storage = storage_for(
        settings.seed, index, settings.sixteen_bit_fraction, settings.rgb_fraction
    )
    params = sample_params(
        rng, min_side=settings.min_side, max_side=settings.max_side, negative=negative
    )
    phantom = render_phantom(rng, params)
    polygons, duplicate = _quirks(
        rng, phantom.keypoints, params.anatomy.unit, index == duplicate_index(settings.seed)
    )
    document = labelme_document(
        stem, phantom.keypoints, params.width, params.height, polygons, duplicate
    )
    truth = {
        "stem": stem,
        "case": index + 1,
        "age": int(stem[4:]),
        "negative": int(negative),
        "facing": params.facing,
        "curvature": params.curvature,
        "bit_depth": storage.bit_depth,
        "mode": storage.mode,
        "value_max": storage.value_max,
        "width": params.width,
        "height": params.height,
        "unit_px": round(params.anatomy.unit, 3),
        "mm_per_pixel": mm_per_pixel(params),
        "cobb_deg": round(params.anatomy.cobb_deg, 3),
        "rotation_deg": round(params.rotation_deg, 3),
        "border": int(any(params.exposure.border)),
        "polygon_labels": ";".join(polygons),
        "duplicate_label": duplicate[0] if duplicate else "",
    }
    return AtlasItem(stem, encode_image(phantom.image, storage), document, truth)


def _require_empty(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(
            f"{directory} is not empty; remove it before generating a new demo atlas"
        )


def _stage(settings: DemoAtlasSettings, staging: dict[str, Path], progress: bool) -> pd.DataFrame:
    rows = []
    for index in tqdm(
        range(settings.n_images), desc="demo atlas", unit="image", disable=not progress
    ):
        item = build_atlas_item(settings, index)
        item.image.save(
            staging["images"] / f"{item.stem}.png", format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )
        (staging["annotations"] / f"{item.stem}.json").write_text(
            json.dumps(item.document, indent=2) + "\n"
        )
        rows.append(item.truth)
    return pd.DataFrame(rows)


def generate_atlas(
    out_dir: Path,
    truth_csv: Path,
    *,
    n_images: int,
    seed: int,
    negative_fraction: float,
    sixteen_bit_fraction: float,
    rgb_fraction: float,
    min_side: int,
    max_side: int,
    progress: bool = True,
) -> pd.DataFrame:
    """Write `out_dir/images/{stem}.png`, `out_dir/annotations/{stem}.json`, the metadata table
    `out_dir/metadata.csv` (each film's pixel spacing, as CSXA's sheet records it) and the
    ground-truth sidecar `truth_csv` (read by tests and benchmarks only); returns the truth table.
    Both folders are built in hidden staging folders and renamed into place when complete.
    The settings are checked as config section `data.demo`; errors name its keys."""
    settings = load_settings(
        DemoAtlasSettings,
        dict(
            n_images=n_images,
            seed=seed,
            negative_fraction=negative_fraction,
            sixteen_bit_fraction=sixteen_bit_fraction,
            rgb_fraction=rgb_fraction,
            min_side=min_side,
            max_side=max_side,
        ),
        "data.demo",
    )
    out_dir = Path(out_dir)
    final = {"images": out_dir / "images", "annotations": out_dir / "annotations"}
    for directory in final.values():
        _require_empty(directory)
    with contextlib.ExitStack() as stack:
        staging = {key: stack.enter_context(atomic_directory(path)) for key, path in final.items()}
        truth = _stage(settings, staging, progress)
    metadata = pd.DataFrame(
        {METADATA_ID_COLUMN: truth["stem"], METADATA_SPACING_COLUMN: truth["mm_per_pixel"]}
    )
    with atomic_output(out_dir / METADATA_NAME) as tmp:
        metadata.to_csv(tmp, index=False)
    with atomic_output(Path(truth_csv)) as tmp:
        truth.to_csv(tmp, index=False)
    return truth
