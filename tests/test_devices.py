"""Every tensor a loss reads follows the model's device. A CPU has one device, so the model goes
to PyTorch's meta device instead: a tensor left on the CPU (a cached reference log-prob, a token
count) then fails exactly as it would beside a GPU ("Expected all tensors to be on the same
device"), which 120 CPU tests once missed."""

import pytest
import torch
from tiny import build_tiny

from harness.datasources import Rows
from harness.method import build_method
from harness.models import load_causal_lm, load_tokenizer, model_ref
from harness.policies.lm import SequenceScorer
from harness.task import build_task
from harness.training.config import TrainConfig
from harness.training.trainer import Trainer, TrainInputs

ROWS = [{"id": str(i), "article": f"The council said bridge {i} will open next year after a delay.", "chosen": f"Bridge {i} opens.", "rejected": "Cats."}
        for i in range(3)]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.mark.parametrize("name", ["srpo", "dpo", "ipo", "simpo", "rpo"])
@pytest.mark.parametrize("share_prefixes", [True, False])
def test_a_training_micro_step_reads_only_tensors_on_the_models_device(tiny, tmp_path, name, share_prefixes):
    trainer = Trainer(TrainInputs(build_method(name), TrainConfig(), build_task("xsum"), model_ref(tiny), Rows.of(ROWS), seed=0), tmp_path)
    tokenizer = load_tokenizer(tiny)
    pairs = trainer._encode(ROWS, tokenizer)
    on_cpu = SequenceScorer(load_causal_lm(tiny), tokenizer.pad_token_id, share_prefixes)
    reference = trainer.reference_logprobs(on_cpu, pairs, batch_size=2) if trainer.method.uses_reference else None  # cached on the CPU, as in a run
    meta = torch.device("meta")
    scorer = SequenceScorer(load_causal_lm(tiny).to(meta), tokenizer.pad_token_id, share_prefixes)
    backward_ran = []
    per_pair, metrics = trainer.micro_step(scorer, pairs, [0, 2], reference, meta, lambda loss: (loss.backward(), backward_ran.append(loss.device)))
    assert per_pair.device == meta and per_pair.shape == (2,) and backward_ran == [meta]
    assert all(value.device == meta for value in metrics.values())


def test_the_meta_device_does_catch_a_tensor_left_on_the_cpu(tiny):
    tokenizer = load_tokenizer(tiny)
    scorer = SequenceScorer(load_causal_lm(tiny).to("meta"), tokenizer.pad_token_id)
    trainer = Trainer(TrainInputs(build_method("dpo"), TrainConfig(), build_task("xsum"), model_ref(tiny), Rows.of(ROWS), seed=0), "/tmp/unused")
    pairs = trainer._encode(ROWS, tokenizer)
    policy = scorer(pairs=pairs[:1], keys=trainer.method.needs)
    left_on_cpu = type(policy)({k: torch.zeros(1) for k in policy.sums}, {k: torch.ones(1) for k in policy.counts})
    with pytest.raises(RuntimeError, match="device"):
        trainer.method.loss(policy, left_on_cpu)  # what the first GPU run hit
