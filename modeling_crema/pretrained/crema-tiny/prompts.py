"""The prompts, targets and answer post-processing of DESIGN §3 (paper Table 11 and the reference), kept in one
place so that training, evaluation and the demo build exactly the same text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


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


# ------------------------------------------------------------------------------------------------ prompt presets
#: The characters the reference's question processor (LAVIS `BlipQuestionProcessor.pre_question`) deletes.
REFERENCE_STRIPPED_CHARACTERS = '.!"()*#:;~'
#: The reference's open-ended instruction, spelt as its dataset code spells it ("phase", where the paper's Table 11
#: prints "phrase"); checkpoints trained by the reference saw this text.
REFERENCE_OPEN_ENDED_TEMPLATE = (
    "Based on the frames and {word} information, answer the question using a single word or phase."
)
#: The reference model's `max_txt_len`: prompts and answers are truncated to 77 tokens (every dataset).
REFERENCE_MAX_TEXT_TOKENS = 77


@dataclass(frozen=True)
class PromptPreset:
    """How one benchmark's prompts, targets and generation were made by the reference code (DESIGN §3), so that
    checkpoints converted from it (or trained to match it) see exactly the text they were trained on.

    Attributes:
        name: the preset (and benchmark) name, e.g. "music_avqa".
        multiple_choice: whether the benchmark is multiple choice (prompt with options, target `Option {L}`);
            informative: the prompt form still follows whether `options` are given.
        modality_word: the fixed word of the open-ended prompt ("audio", "3D Model", "touch map",
            "thermal heatmap"); None for multiple choice.
        open_ended_template: the open-ended instruction, with `{word}` for the modality word.
        lowercase: lower-case the question and the situation (the reference's question processor).
        strip_characters: characters deleted from the question and the situation (`.!"()*#:;~` in the reference).
        max_question_words: keep at most this many space-separated words of the question and situation (the
            question processor's `max_words`, 50).
        verbatim: keep the question and options exactly as given (no whitespace trimming), as the reference does;
            without it the prompt builders trim them as the default prompts do.
        max_prompt_tokens / max_answer_tokens: tokenizer truncation of the prompt and of the target (77 in the
            reference); an explicit `max_prompt_length` / `max_answer_length` of the processor wins.
        answer_replacements: (old, new) replacements applied to open-ended targets, e.g. MUSIC-AVQA's `_` -> space.
        max_new_tokens / num_beams / length_penalty: the reference's beam search for open-ended answers.
        empty_answer: what an empty generation becomes.
    """

    name: str
    multiple_choice: bool = False
    modality_word: str | None = None
    open_ended_template: str = REFERENCE_OPEN_ENDED_TEMPLATE
    lowercase: bool = False
    strip_characters: str = ""
    max_question_words: int | None = None
    verbatim: bool = True
    max_prompt_tokens: int | None = REFERENCE_MAX_TEXT_TOKENS
    max_answer_tokens: int | None = REFERENCE_MAX_TEXT_TOKENS
    answer_replacements: tuple[tuple[str, str], ...] = ()
    max_new_tokens: int = 10
    num_beams: int = 5
    length_penalty: float = -1.0
    empty_answer: str = UNANSWERABLE

    def process_text(self, text: str) -> str:
        """A question or situation as the reference's question processor leaves it: lower-cased, the characters of
        `strip_characters` deleted, trailing spaces removed, cut to `max_question_words` words (each only when
        the preset asks for it)."""
        text = str(text)
        if self.lowercase:
            text = text.lower()
        if self.strip_characters:
            text = re.sub(f"[{re.escape(self.strip_characters)}]", "", text)
        if self.lowercase or self.strip_characters or self.max_question_words is not None:
            text = text.rstrip(" ")
        if self.max_question_words is not None:
            words = text.split(" ")
            if len(words) > self.max_question_words:
                text = " ".join(words[: self.max_question_words])
        return text if self.verbatim else text.strip()

    def build_prompt(
        self,
        question: str,
        options: Sequence[str] | None = None,
        situation: str | None = None,
        modality_word: str | None = None,
    ) -> str:
        """The prompt: multiple choice when `options` are given (question and options as given, like the reference's
        NExT-QA loader), else open-ended with the processed question, the preset's modality word (or
        `modality_word`) and `{situation}. ` in front when a situation is given (SQA3D)."""
        if options:
            if len(options) > len(OPTION_LETTERS):
                raise ValueError(f"At most {len(OPTION_LETTERS)} options are supported, got {len(options)}.")
            if not self.verbatim:
                return build_multiple_choice_prompt(question, options)
            prompt = f"Question: {question}"
            for index, option in enumerate(options):
                prompt += f" Option {OPTION_LETTERS[index]}: {option}"
            return f"{prompt} {MULTIPLE_CHOICE_INSTRUCTION}"
        word = modality_word or self.modality_word
        instruction = self.open_ended_template.format(word=word) if word else VIDEO_ONLY_OPEN_ENDED
        prompt = f"Question: {self.process_text(question)} {instruction}"
        if situation is not None and str(situation).strip():
            prompt = f"{self.process_text(situation)}. {prompt}"
        return prompt

    def build_target(self, answer: Any, options: Sequence[str] | None = None) -> str:
        """`Option {L}` for multiple choice, else the answer with `answer_replacements` applied."""
        if options:
            return multiple_choice_target(answer, options)
        text = str(answer)
        for old, new in self.answer_replacements:
            text = text.replace(old, new)
        return text if self.verbatim else text.strip()

    def post_process(self, text: str, options: Sequence[str] | None = None) -> str:
        """Generated text -> answer (as `post_process_answer`; an empty output becomes `empty_answer`)."""
        return post_process_answer(text, options) if text.strip() else self.empty_answer

    def generation_kwargs(self) -> dict[str, Any]:
        """`generate` arguments of the reference's open-ended decoding: beam search, new tokens, length penalty."""
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens,
                "length_penalty": self.length_penalty}


_REFERENCE_QUESTION = dict(lowercase=True, strip_characters=REFERENCE_STRIPPED_CHARACTERS, max_question_words=50)

#: The per-benchmark presets (DESIGN §3), by name: the names are those of the benchmark builders'
#: `prompt_preset` column. NExT-QA / PerceptionTest: multiple choice, question and options verbatim. MUSIC-AVQA,
#: SQA3D: the reference's question processing and "phase"; MUSIC-AVQA answers have `_` replaced by a space; SQA3D
#: prepends the (processed) situation and generates up to 40 new tokens. The reference code for VGGSound, TouchQA
#: and ThermalQA is not published: their presets use Table 11's modality words with the same question processing
#: and spelling as the released open-ended loaders.
PROMPT_PRESETS: dict[str, PromptPreset] = {
    preset.name: preset
    for preset in (
        PromptPreset("nextqa", multiple_choice=True),
        PromptPreset("perception_test", multiple_choice=True),
        PromptPreset("music_avqa", modality_word="audio", answer_replacements=(("_", " "),), **_REFERENCE_QUESTION),
        PromptPreset("sqa3d", modality_word="3D Model", max_new_tokens=40, **_REFERENCE_QUESTION),
        PromptPreset("vggsound", modality_word="audio", **_REFERENCE_QUESTION),
        PromptPreset("touchqa", modality_word="touch map", **_REFERENCE_QUESTION),
        PromptPreset("thermalqa", modality_word="thermal heatmap", **_REFERENCE_QUESTION),
    )
}
_PRESET_ALIASES = {
    "next_qa": "nextqa", "perceptiontest": "perception_test", "perception": "perception_test",
    "musicavqa": "music_avqa", "avqa": "music_avqa", "touch_qa": "touchqa", "thermal_qa": "thermalqa",
}


def get_prompt_preset(preset: str | PromptPreset | None) -> PromptPreset | None:
    """The preset named `preset` (case-insensitive; `-` and `_` alike; a few aliases such as "avqa"), the preset
    itself when one is given, None for None or "". An unknown name is a ValueError listing the known ones."""
    if preset is None or isinstance(preset, PromptPreset):
        return preset
    key = str(preset).strip().lower().replace("-", "_")
    if not key:
        return None
    key = _PRESET_ALIASES.get(key, key)
    if key not in PROMPT_PRESETS:
        raise ValueError(f"Unknown prompt preset {preset!r}; choose one of {sorted(PROMPT_PRESETS)}.")
    return PROMPT_PRESETS[key]


def build_prompt(
    preset: str | PromptPreset | None,
    question: str,
    options: Sequence[str] | None = None,
    situation: str | None = None,
    modality_word: str | None = None,
) -> str:
    """The prompt of `preset` (see `PromptPreset.build_prompt`); without a preset, the default prompts
    (`build_multiple_choice_prompt` / `build_open_ended_prompt`)."""
    resolved = get_prompt_preset(preset)
    if resolved is not None:
        return resolved.build_prompt(question, options, situation, modality_word)
    if options:
        return build_multiple_choice_prompt(question, options)
    return build_open_ended_prompt(question, modality_word, situation)


def build_target(preset: str | PromptPreset | None, answer: Any, options: Sequence[str] | None = None) -> str:
    """The target text of `preset` (see `PromptPreset.build_target`); without a preset `Option {L}` or the trimmed
    answer."""
    resolved = get_prompt_preset(preset)
    if resolved is not None:
        return resolved.build_target(answer, options)
    return multiple_choice_target(answer, options) if options else str(answer).strip()
