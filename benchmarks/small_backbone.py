"""The mid-size random backbone the benchmark scripts share (no download), so that their figures are comparable:
a 4-layer ViT and Q-Former of width 256 and a 6-layer T5 of width 512 with a 1000-token vocabulary.

The scripts are run as `python benchmarks/NAME.py` (and loaded by path in the tests); each puts this folder on
`sys.path` before importing this module.
"""

from __future__ import annotations

from typing import Any

from transformers import Blip2QFormerConfig, Blip2VisionConfig, T5Config


def small_backbone() -> dict[str, dict[str, Any]]:
    """The `vision_config`, `qformer_config` and `text_config` of the shared backbone, as `CremaConfig` keywords."""
    return {
        "vision_config": Blip2VisionConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                           num_attention_heads=4, image_size=112, patch_size=14).to_dict(),
        "qformer_config": Blip2QFormerConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                             num_attention_heads=4, encoder_hidden_size=256).to_dict(),
        "text_config": T5Config(vocab_size=1000, d_model=512, d_kv=64, d_ff=1024, num_layers=6, num_heads=8,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1).to_dict(),
    }
