"""The closed vocabulary of CREMA-Synth: object attributes, the physical encodings of the companion renders, and
the question templates with the modalities each one needs. Pure Python (no numpy): the command line reads it to
build its help without importing anything heavy."""

from __future__ import annotations

from dataclasses import dataclass

COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
FACINGS = ("up", "down", "left", "right")
NUMBER_WORDS = ("one", "two", "three")
PITCHES = ("high", "low")
DISTANCES = ("near", "far")
YES_NO = ("yes", "no")

#: Nominal RGB of each object colour (each clip jitters every channel by up to `COLOR_JITTER`).
COLOR_RGB = {"red": (215, 45, 40), "green": (45, 185, 65), "blue": (45, 80, 225), "yellow": (230, 210, 45)}
COLOR_JITTER = 12
#: Background grey level range of the RGB clip (dark, so that every object colour stands out in grey scale,
#: which is what Farneback optical flow sees), plus a static texture of this amplitude.
BACKGROUND_LEVELS = (25, 45)
BACKGROUND_TEXTURE = 6

#: Unit vectors (x to the right, y downwards, as image coordinates) of the motion directions and facings.
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

# ---------------------------------------------------------------------------------------------- depth render
#: Distances in metres: near objects, far objects, and the background (top of the frame farthest).
NEAR_RANGE = (1.0, 2.0)
FAR_RANGE = (4.0, 6.0)
BACKGROUND_DEPTH_RANGE = (8.0, 10.0)
NEAR_FAR_SPLIT = 3.0
#: Depth render: grey = 255 * (1 - (z - DEPTH_MIN) / DEPTH_SPAN), i.e. near = bright (like the reference's
#: ZoeDepth colouring and the inverse depth of DPT / Depth Anything rendered by `crema_processing.depth`).
DEPTH_MIN = 0.5
DEPTH_SPAN = 10.0

# -------------------------------------------------------------------------------------------- thermal render
#: Temperatures in degrees Celsius; the render maps [THERMAL_MIN, THERMAL_MAX] to grey and applies OpenCV's
#: inferno colour map (dark purple = cold, bright yellow = hot).
HOT_RANGE = (70.0, 95.0)
WARM_RANGE = (28.0, 40.0)
AMBIENT_RANGE = (18.0, 22.0)
HOT_THRESHOLD = 50.0
THERMAL_MIN = 10.0
THERMAL_MAX = 100.0

# --------------------------------------------------------------------------------------------- normal render
#: Tilt of an object's surface away from the camera axis, in degrees, towards its facing. Encoded like
#: `crema_processing.surface_normals.render_normals`: RGB = (n + 1) / 2 * 255 with n = (x right, y down,
#: z towards the camera); the background faces the camera, n = (0, 0, 1).
TILT_RANGE = (35.0, 60.0)

# --------------------------------------------------------------------------------------------------- audio
AUDIO_SAMPLING_RATE = 16000
LOW_PITCH_HZ = (300.0, 500.0)
HIGH_PITCH_HZ = (1200.0, 2000.0)
BEEP_SECONDS = (0.08, 0.15)
MIN_GAP_SECONDS = 0.12
#: The track's noise floor (standard deviation), drawn per clip, log-uniformly. With one fixed floor (0.004) the
#: tiny AST took the floor's level as part of what a beep count or a pitch sounds like: tracks with a floor of
#: 0.003 or 0.009 were misread although their beeps were the same.
NOISE_AMPLITUDE_RANGE = (0.0005, 0.02)

MODALITIES = ("video", "audio", "flow", "depth", "normal", "thermal")


@dataclass(frozen=True)
class QuestionTemplate:
    """One question type: its text (with `{color}` / `{shape}` slots), answer options, the modalities whose
    evidence the answer needs, and the number of objects of the clips it is asked about."""

    name: str
    text: str
    options: tuple[str, ...]
    needed_modalities: tuple[str, ...]
    num_objects: int | None  # None: asked about every clip
    evidence: str


QUESTION_TEMPLATES: tuple[QuestionTemplate, ...] = (
    # one object
    QuestionTemplate("color", "What colour is the object?", COLORS, ("video",), 1, "the RGB frames"),
    QuestionTemplate("shape", "What shape is the object?", SHAPES, ("video",), 1, "the RGB frames"),
    QuestionTemplate("motion", "Which way does the object move?", DIRECTIONS, ("flow",), 1,
                     "optical flow between consecutive frames"),
    QuestionTemplate("depth", "Is the object near the camera or far from it?", DISTANCES, ("depth",), 1,
                     "the depth render"),
    QuestionTemplate("hot", "Is the object hot?", YES_NO, ("thermal",), 1, "the thermal render"),
    QuestionTemplate("orientation", "Which way does the surface of the object face?", FACINGS, ("normal",), 1,
                     "the surface-normal render"),
    # two objects
    QuestionTemplate("color_of_shape", "What colour is the {shape}?", COLORS, ("video",), 2, "the RGB frames"),
    QuestionTemplate("shape_of_color", "What shape is the {color} object?", SHAPES, ("video",), 2,
                     "the RGB frames"),
    QuestionTemplate("color_motion", "Which way does the {color} object move?", DIRECTIONS, ("video", "flow"), 2,
                     "colour from RGB, motion from optical flow"),
    QuestionTemplate("near_color", "What colour is the object nearer to the camera?", COLORS, ("video", "depth"), 2,
                     "colour from RGB, distance from the depth render"),
    QuestionTemplate("hot_color", "What colour is the hot object?", COLORS, ("video", "thermal"), 2,
                     "colour from RGB, heat from the thermal render"),
    QuestionTemplate("color_orientation", "Which way does the surface of the {color} object face?", FACINGS,
                     ("video", "normal"), 2, "colour from RGB, orientation from the normal render"),
    QuestionTemplate("hot_motion", "Which way does the hot object move?", DIRECTIONS, ("thermal", "flow"), 2,
                     "heat from the thermal render, motion from optical flow"),
    # any clip
    QuestionTemplate("beeps", "How many beeps are there?", NUMBER_WORDS, ("audio",), None, "the clip's audio track"),
    QuestionTemplate("pitch", "Is the beep high or low pitched?", PITCHES, ("audio",), None, "the clip's audio track"),
)
QUESTION_TYPES = tuple(template.name for template in QUESTION_TEMPLATES)
TEMPLATES_BY_NAME = {template.name: template for template in QUESTION_TEMPLATES}
