"""Hub cards and sharing for CREMA: model cards, adapter cards, the Space card, and pushes (`crema push`,
`crema push-adapter`).

Depends only on `huggingface_hub` (and the standard library): cards are written from a saved folder's files, so they
can be made anywhere. `modeling_crema` uses this package when it is importable (`save_pretrained` and `save_adapter`
write a card); the model's remote code works without it and then writes no card.
"""

from .adapter_card import adapter_card
from .eval_results import eval_results_from
from .folder_facts import AdapterFacts, ModelFacts, folder_kind, read_adapter_facts, read_model_facts
from .hub_rules import checked_card, front_matter
from .marker import GENERATED_MARKER, is_generated_card, users_card
from .model_card import model_card
from .push import Pushed, push_adapter, push_model, stage_adapter, stage_model
from .saved_cards import write_saved_card
from .space_card import DEFAULT_GRADIO_VERSION, space_card, write_space_readme

__all__ = [
    "AdapterFacts",
    "DEFAULT_GRADIO_VERSION",
    "GENERATED_MARKER",
    "ModelFacts",
    "Pushed",
    "adapter_card",
    "checked_card",
    "eval_results_from",
    "folder_kind",
    "front_matter",
    "is_generated_card",
    "model_card",
    "push_adapter",
    "push_model",
    "read_adapter_facts",
    "read_model_facts",
    "space_card",
    "stage_adapter",
    "stage_model",
    "users_card",
    "write_saved_card",
    "write_space_readme",
]
