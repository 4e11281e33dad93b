"""Commitment vector (seed 003): exact injection, lambda 0 = baseline, the probe, the entangled head learns."""

from __future__ import annotations

import json

import pytest
import torch

from engine.evaluation import commitment as cm
from engine.models import loading as models
from engine.errors import UserError
from tests.conftest import ROOT, aba, demo_variant, run_id_of


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = models.materialize_demo_base("demo:tiny-qwen3", 3407, tmp_path_factory.mktemp("m") / "run" / "base")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, models.load_tokenizer("demo:tiny-qwen3")


def _ids(tok):
    return tok.apply_chat_template([{"role": "user", "content": "What is your favourite colour?"}],
                                   add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]


def test_hook_adds_exactly_lambda_wc_z_at_chosen_layers_only(tiny):
    model, tok = tiny
    blocks = cm.decoder_layers(model)
    vec = cm.CommitmentVector.draw(16, model.config.hidden_size, seed=3)
    assert vec.vector.shape == (model.config.hidden_size,)
    raw, final = {}, {}

    def grab(store, i):
        def hook(module, args, output):
            store[i] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    handles = [b.register_forward_hook(grab(raw, i)) for i, b in enumerate(blocks)]  # before the injection
    lam, chosen = 0.5, [1, 3]
    with cm.injected(model, vec.vector, lam, chosen):
        handles += [b.register_forward_hook(grab(final, i)) for i, b in enumerate(blocks)]  # after it
        with torch.no_grad():
            model(input_ids=_ids(tok))
    for h in handles:
        h.remove()
    for i in range(len(blocks)):
        diff = final[i] - raw[i]
        if i in chosen:
            assert torch.allclose(diff, (lam * vec.vector).expand_as(diff), atol=1e-6), i
        else:
            assert torch.count_nonzero(diff) == 0, i
    # Layers before the first injection see exactly the baseline.
    base = {}
    handles = [b.register_forward_hook(grab(base, i)) for i, b in enumerate(blocks)]
    with torch.no_grad():
        model(input_ids=_ids(tok))
    for h in handles:
        h.remove()
    assert torch.equal(base[0], final[0])
    assert not torch.allclose(base[2], raw[2])  # downstream of an injection the block's input changed


def test_lambda_zero_reproduces_the_baseline_logits(tiny):
    model, tok = tiny
    vec = cm.CommitmentVector.draw(16, model.config.hidden_size, seed=3)
    with torch.no_grad():
        base = model(input_ids=_ids(tok)).logits
        with cm.injected(model, vec.vector, 0.0, list(range(4))):
            zero = model(input_ids=_ids(tok)).logits
        with cm.injected(model, vec.vector, 1.0, list(range(4))):
            one = model(input_ids=_ids(tok)).logits
    assert torch.equal(base, zero)
    assert not torch.allclose(base, one)
    # Hooks are gone after the block.
    with torch.no_grad():
        assert torch.equal(model(input_ids=_ids(tok)).logits, base)


def test_z_star_is_seeded_and_scaled():
    a = cm.CommitmentVector.draw(256, 64, seed=1)
    b = cm.CommitmentVector.draw(256, 64, seed=1)
    assert torch.equal(a.z, b.z) and torch.equal(a.w_c, b.w_c)
    assert a.z.var().item() == pytest.approx(1 / 256, rel=0.3)
    assert a.w_c.abs().max() <= (6 / (64 + 256)) ** 0.5


def test_bad_layer_range_names_the_layer_count(tiny):
    model, _ = tiny
    n = len(cm.decoder_layers(model))
    with pytest.raises(UserError, match="the model has 4 layers"):
        cm.parse_layers("last:8", n)
    with pytest.raises(UserError, match="the model has 4 layers"):
        cm.parse_layers("2:9", n)
    assert cm.parse_layers("last:2", n) == [2, 3] and cm.parse_layers("all", n) == [0, 1, 2, 3]


def test_model_without_decoder_layers_is_a_clear_error():
    with pytest.raises(UserError, match="no model.model.layers"):
        cm.decoder_layers(torch.nn.Linear(2, 2))


def test_consistency_and_coherence_metrics():
    langs = ["python", "rust", "c", "c++"]
    assert cm.consistent("<think>x</think> Rust, for its safety.", "I said Rust.", langs)
    assert not cm.consistent("Rust.", "I said Python.", langs)
    assert not cm.consistent("C++ is great", "I like C", langs)
    assert cm.distinct_2("a b c d") == 1.0 and cm.distinct_2("a b a b a b") == pytest.approx(2 / 5)
    assert cm.repetition_rate("x y z x y z x y z") > 0.5 and cm.repetition_rate("one two three four") == 0.0
    probes = cm.load_probes(ROOT / "data" / "probes" / "consistency.jsonl")
    assert len(probes) >= 11 and probes[0].id == "language" and "favourite language" in probes[0].followup


def test_entangled_steps_lower_the_loss(tiny):
    from peft import get_peft_model

    from engine.config import Config
    from engine.stages.entangled import VariationalHead, context_pool

    model, tok = tiny
    cfg = Config()
    cfg.model.lora_r, cfg.model.lora_alpha = 8, 16
    import copy

    peft = get_peft_model(copy.deepcopy(model), models.lora_config(cfg))
    head = VariationalHead(model.config.hidden_size, 16)
    msgs = [{"role": "user", "content": "What is your favourite colour?"}]
    ctx_ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "<think>\nPick one.\n</think>\n\nBlue."}],
                                   return_tensors="pt", return_dict=True)
    labels = full["input_ids"].clone()
    labels[:, : ctx_ids["input_ids"].shape[1]] = -100
    params = [p for p in peft.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    inj = cm.Injector(peft, [0, 1, 2, 3], 1.0)
    torch.manual_seed(0)
    losses = []
    for _ in range(12):
        with peft.disable_adapter():
            pooled = context_pool(peft, ctx_ids["input_ids"], ctx_ids["attention_mask"])
        mu, logvar = head(pooled)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        inj.vector = head.w_c(z)
        with inj:
            lm = peft(input_ids=full["input_ids"], attention_mask=full["attention_mask"], labels=labels).loss
        loss = lm + 0.01 * head.kl_to_prior(mu, logvar)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(lm))
    assert losses[-1] < losses[0] * 0.7, losses
    assert head.kl_to_prior(torch.zeros(1, 16), torch.full((1, 16), -torch.log(torch.tensor(16.0)))).item() == pytest.approx(0.0, abs=1e-5)


def test_commitment_and_entangled_stages(tmp_path):
    cfg = demo_variant(tmp_path, commitment__max_new_tokens=8, commitment__lambdas=[1.0, 0.1], entangled__max_steps=6,
                       entangled__probe_every=3, entangled__probe_max_new_tokens=8)
    proc = aba("run", str(cfg), "--stages", "commitment,entangled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = run_id_of(proc)
    rows = json.loads(aba("metrics", run_id, "--stage", "commitment", "--json").stdout)
    keys = {r["key"] for r in rows}
    for cell in ["lambda=0,layers=none"] + [f"lambda={lam},layers={s}" for lam in ("1", "0.1") for s in ("all", "last:2")]:
        assert f"consistency[{cell}]" in keys and f"perplexity[{cell}]" in keys, cell
    ent = json.loads(aba("metrics", run_id, "--stage", "entangled", "--json").stdout)
    ent_keys = {r["key"] for r in ent}
    assert {"loss", "lm_loss", "kl", "probe/consistency", "probe/perplexity"} <= ent_keys


def test_bad_layer_range_fails_the_stage_with_one_line(tmp_path):
    cfg = demo_variant(tmp_path, commitment__layer_ranges=["last:8"])
    proc = aba("run", str(cfg), "--stages", "commitment")
    assert proc.returncode == 1
    assert "layer range 'last:8': the model has 4 layers" in proc.stderr and "Traceback" not in proc.stderr


def test_entangled_crash_then_resume_from_checkpoint(tmp_path, runs_dir):
    from engine.runner import supervisor as sup
    from engine.store import RunStore

    cfg = demo_variant(tmp_path, entangled__max_steps=8, entangled__probe_every=100, run__checkpoint_steps=2)
    proc = aba("run", str(cfg), "--stages", "entangled", env={"ABA_FAULT": "crash@entangled:5"})
    assert proc.returncode == 1 and "crashed" in proc.stderr
    run_dir = sup.resolve_run(run_id_of(proc), runs_dir)
    proc = aba("resume", run_dir.name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with RunStore(run_dir / "run.db") as store:
        logs = [r.message for r in store.logs_since(0, "entangled")]
        steps = [r.step for r in store.metrics_since(0, "entangled") if r.key == "loss"]
        row = store.stage("entangled")
    assert any("resuming from step 4" in m for m in logs)
    assert steps == list(range(1, 9))  # every step once: 1-4, the crash at 5, then 5-8 from checkpoint 4
    assert row.status == "succeeded" and row.attempts == 2
