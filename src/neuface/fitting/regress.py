"""``regress`` annotator (the paper's "DECA-dataset"): one encoder pass per frame and view, no optimisation."""

from __future__ import annotations

import torch

from neuface.encoders.base import FlameEncoder
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch
from neuface.fitting.forward import FitFailure, FitParams, predict_all, prepare_encoder
from neuface.fitting.neuface import FitOutcome

__all__ = ["regress"]


def regress(encoder: FlameEncoder, seq: SequenceBatch, settings: AnnotatorSettings,
            device: torch.device) -> FitOutcome:
    """Parameters of every (frame, view) from one no-grad encoder pass; β = mean over frames and views."""
    prepare_encoder(encoder, device, settings.channels_last)
    input_size = int(getattr(encoder, "input_size", 224))
    out = predict_all(encoder, seq, input_size, device, settings.chunk_images, settings.amp,
                      settings.channels_last)
    if not all(torch.isfinite(v).all() for v in vars(out).values()):
        raise FitFailure("the encoder predicts non-finite parameters")
    return FitOutcome(FitParams.from_encoder_output(out, seq.n_frames, seq.n_views), {}, 0)
