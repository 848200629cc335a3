"""The prompts, targets and answer post-processing of DESIGN §3 (paper Table 11 and the reference), kept in one
place so that training, evaluation and the demo build exactly the same text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


OPTION_LETTERS = "ABCDEFGHIJ"
MULTIPLE_CHOICE_INSTRUCTION = (
    "Considering the information presented in the frame, select the correct answer from the options."
)
OPEN_ENDED_TEMPLATE = "Based on the frames and {word} information, answer the question using a single word or phrase."
VIDEO_ONLY_OPEN_ENDED = "Based on the frames, answer the question using a single word or phrase."
UNANSWERABLE = "unanswerable"

# The word naming the supportive modality in the open-ended prompt (paper Table 11).
MODALITY_WORDS = {
    "audio": "audio",
    "point_cloud": "3D Model",
    "touch": "touch map",
    "thermal": "thermal heatmap",
}


def build_multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """`Question: {q} Option A: {a0} ... Option E: {a4} Considering the information presented in the frame,
    select the correct answer from the options.`"""
    if not options:
        raise ValueError("A multiple-choice prompt needs at least one option.")
    if len(options) > len(OPTION_LETTERS):
        raise ValueError(f"At most {len(OPTION_LETTERS)} options are supported, got {len(options)}.")
    parts = [f"Question: {question.strip()}"]
    parts += [f"Option {OPTION_LETTERS[i]}: {str(option).strip()}" for i, option in enumerate(options)]
    parts.append(MULTIPLE_CHOICE_INSTRUCTION)
    return " ".join(parts)


def infer_modality_word(modalities: Iterable[str]) -> str | None:
    """The open-ended prompt's modality word for the supportive modalities present (first match in the order of
    MODALITY_WORDS), or None when only visual ones are present."""
    present = set(modalities)
    for name, word in MODALITY_WORDS.items():
        if name in present:
            return word
    return None


def build_open_ended_prompt(question: str, modality_word: str | None, situation: str | None = None) -> str:
    """`Question: {q} Based on the frames and {word} information, answer the question using a single word or
    phrase.`; SQA3D prepends `{situation}. `. Without a modality word (video only, outside the paper's tables)
    the instruction reads `Based on the frames, answer ...`."""
    instruction = OPEN_ENDED_TEMPLATE.format(word=modality_word) if modality_word else VIDEO_ONLY_OPEN_ENDED
    prompt = f"Question: {question.strip()} {instruction}"
    if situation:
        prompt = f"{situation.strip().rstrip('.')}. {prompt}"
    return prompt


def option_index(answer: int | str, options: Sequence[str]) -> int:
    """The index of the correct option from an int index, a letter ("B", "Option B") or the option text."""
    if isinstance(answer, (int,)) and not isinstance(answer, bool):
        index = int(answer)
    else:
        text = str(answer).strip()
        letter = parse_option_letter(text, len(options))
        if text.isdigit():
            index = int(text)
        elif letter is not None and (len(text) == 1 or text.lower().startswith("option")):
            index = OPTION_LETTERS.index(letter)
        else:
            normalized = [normalize_answer(o) for o in options]
            if normalize_answer(text) not in normalized:
                raise ValueError(f"Answer {answer!r} is neither an option index, a letter, nor one of {list(options)}.")
            index = normalized.index(normalize_answer(text))
    if not 0 <= index < len(options):
        raise ValueError(f"Answer index {index} is out of range for {len(options)} options.")
    return index


def multiple_choice_target(answer: int | str, options: Sequence[str]) -> str:
    """The multiple-choice target text `Option {L}`."""
    return f"Option {OPTION_LETTERS[option_index(answer, options)]}"


def parse_option_letter(text: str, num_options: int = len(OPTION_LETTERS)) -> str | None:
    """The option letter in a generated answer ("Option B", "(B)", "B", "b."), or None."""
    letters = OPTION_LETTERS[:num_options]
    text = text.strip()
    match = re.search(rf"\boption\s*\(?([{letters}{letters.lower()}])\b", text, flags=re.IGNORECASE)
    if match is None:
        match = re.fullmatch(rf"\(?([{letters}{letters.lower()}])\)?[.:]?", text)
    return match.group(1).upper() if match else None


def normalize_answer(text: str) -> str:
    """Lower-case, trim and collapse spaces; drop a final period (for exact-match accuracy)."""
    return re.sub(r"\s+", " ", str(text).strip().lower()).rstrip(".").strip()


def post_process_answer(text: str, options: Sequence[str] | None = None) -> str:
    """Generated text -> answer. Multiple choice: `Option B` -> the text of option B (the raw text when no letter
    can be read). Open-ended: the stripped text. Empty output -> "unanswerable" (DESIGN §3)."""
    text = text.strip()
    if not text:
        return UNANSWERABLE
    if options:
        letter = parse_option_letter(text, len(options))
        if letter is not None:
            return str(options[OPTION_LETTERS.index(letter)])
    return text
