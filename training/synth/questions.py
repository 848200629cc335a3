"""Questions about a `SynthScene`, one per applicable template (vocabulary.QUESTION_TEMPLATES): the answer is read
off the scene, the options are the template's closed vocabulary (shuffled per question when asked)."""

from __future__ import annotations

import numpy as np

from . import vocabulary as V
from .scene import SynthObject, SynthScene


def _hot(scene: SynthScene) -> SynthObject:
    return next(obj for obj in scene.objects if obj.hot)


def _nearer(scene: SynthScene) -> SynthObject:
    return min(scene.objects, key=lambda obj: obj.distance)


def _answer(name: str, scene: SynthScene, rng: np.random.Generator) -> tuple[dict, str]:
    """Slot values for the template's text and the answer."""
    objects = scene.objects
    first = objects[0]
    if name == "color":
        return {}, first.color
    if name == "shape":
        return {}, first.shape
    if name == "motion":
        return {}, first.direction
    if name == "depth":
        return {}, "near" if first.near else "far"
    if name == "hot":
        return {}, "yes" if first.hot else "no"
    if name == "orientation":
        return {}, first.facing
    if name == "beeps":
        return {}, V.NUMBER_WORDS[len(scene.beeps) - 1]
    if name == "pitch":
        return {}, scene.pitch
    target = objects[int(rng.integers(len(objects)))]  # the object a {color}/{shape} slot names
    if name == "color_of_shape":
        return {"shape": target.shape}, target.color
    if name == "shape_of_color":
        return {"color": target.color}, target.shape
    if name == "color_motion":
        return {"color": target.color}, target.direction
    if name == "color_orientation":
        return {"color": target.color}, target.facing
    if name == "near_color":
        return {}, _nearer(scene).color
    if name == "hot_color":
        return {}, _hot(scene).color
    if name == "hot_motion":
        return {}, _hot(scene).direction
    raise ValueError(f"Unknown question type {name!r}; known: {V.QUESTION_TYPES}.")


def applicable_templates(scene: SynthScene, question_types: tuple[str, ...] | None = None) -> list[V.QuestionTemplate]:
    wanted = V.QUESTION_TYPES if question_types is None else question_types
    return [
        template
        for template in V.QUESTION_TEMPLATES
        if template.name in wanted and template.num_objects in (None, len(scene.objects))
    ]


def scene_questions(
    scene: SynthScene,
    rng: np.random.Generator,
    question_types: tuple[str, ...] | None = None,
    questions_per_clip: int | None = None,
    shuffle_options: bool = True,
) -> list[dict]:
    """The questions of one clip as dicts (question, options, answer, answer_index, question_type,
    needed_modalities). Every applicable template by default, or `questions_per_clip` of them at random."""
    templates = applicable_templates(scene, question_types)
    if questions_per_clip is not None and questions_per_clip < len(templates):
        keep = sorted(rng.choice(len(templates), size=questions_per_clip, replace=False))
        templates = [templates[i] for i in keep]
    rows = []
    for template in templates:
        slots, answer = _answer(template.name, scene, rng)
        options = list(template.options)
        if shuffle_options:
            options = [options[i] for i in rng.permutation(len(options))]
        rows.append(
            {
                "question": template.text.format(**slots),
                "options": options,
                "answer": answer,
                "answer_index": options.index(answer),
                "question_type": template.name,
                "needed_modalities": list(template.needed_modalities),
            }
        )
    return rows
