"""Mimicking layers: network, fused Triton block (interpreter on the CPU), replace_stack, distill."""

import json
import os

import numpy as np
import pytest
import torch

from fastsim.mimic import MimicConfig, MimickingNetwork, distill, parameter_report, replace_stack
from fastsim.mimic import fused as fused_mod
from fastsim.mimic.replace import stack_input
from fastsim.speech.models import random_model
from fastsim.speech.runner import hidden_state_batches

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VARIANTS = [("wav2vec2", {}), ("wav2vec2", "stable"), ("hubert", {}), ("hubert", "stable"),
            ("wavlm", {}), ("wavlm", "stable"), ("data2vec-audio", {})]
STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(family, kw):
    return random_model(family, "tiny", **(STABLE if kw == "stable" else kw))


def _noise_clips(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=int(rng.integers(8000, 24000))).astype(np.float32) for _ in range(n)]


def _randomized(net, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.dim() == 1 and std == 0 else 0))
    return net


# ---- the network ---------------------------------------------------------------------------------

def test_default_is_the_papers_block_and_counts_parameters():
    net = MimickingNetwork(dim=768)
    b = net.blocks[0]
    assert len(net.blocks) == 1 and b.fc1.out_features == 64 and b.activation == "relu" and b.conv is None
    assert net.num_parameters() == (768 * 64 + 64) + 2 * 64 + (64 * 768 + 768)
    assert MimicConfig(dim=8, widths=(4, 4)).resolved_targets(12) == (6, 12)
    assert MimicConfig(dim=8, widths=(4, 4), targets=(5, -1)).resolved_targets(12) == (5, 12)


@pytest.mark.parametrize("kw, match", [
    (dict(dim=0), "dim"), (dict(dim=8, widths=()), "widths"), (dict(dim=8, activation="elu"), "activation"),
    (dict(dim=8, context=2), "context"), (dict(dim=8, widths=(4, 4), targets=(3,)), "targets"),
    (dict(dim=8, widths=("a",)), "widths"), (dict(dim=8, widths=(4.5,)), "widths"), (dict(dim=8, widths="64"), "widths"),
    (dict(dim=8, targets=("x",)), "targets"), (dict(dim=8, context="3"), "context"),
    (dict(dim=8, layer_norm_eps=-1.0), "layer_norm_eps"),
])
def test_config_errors_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        MimicConfig(**kw)


def test_target_errors():
    with pytest.raises(ValueError, match="last block"):
        MimicConfig(dim=8, widths=(4, 4), targets=(2, 3)).resolved_targets(4)
    with pytest.raises(ValueError, match="outside"):
        MimicConfig(dim=8, targets=(9,)).resolved_targets(4)


def test_padding_does_not_reach_valid_frames_through_the_context():
    net = _randomized(MimickingNetwork(dim=12, widths=(8,), context=5)).eval()
    x = torch.randn(1, 20, 12)
    mask = torch.arange(20)[None] < 13
    y = torch.cat([x[:, :13], 100 * torch.randn(1, 7, 12)], 1)
    with torch.no_grad():
        assert torch.allclose(net(x, mask)[:, :13], net(y, mask)[:, :13], atol=1e-6)
        assert not torch.allclose(net(x)[:, :13], net(y)[:, :13], atol=1e-3)  # without the mask it would


# ---- the fused kernel ----------------------------------------------------------------------------

FUSED_CASES = [
    dict(dim=48, widths=(20,)),
    dict(dim=70, widths=(64, 33), activation="gelu", residual=True),
    dict(dim=40, widths=(16,), context=3, activation="tanh"),
    dict(dim=33, widths=(17,), activation="silu"),
]


def _tol(ref, dtype):
    return {torch.float64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype] * (1 + ref.abs().max().item())


@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_fused_forward_equals_module_forward(case, dtype):
    net = _randomized(MimickingNetwork(**case)).eval().to(DEVICE, dtype)
    x = torch.randn(3, 37, case["dim"], device=DEVICE).to(dtype)
    mask = torch.arange(37, device=DEVICE)[None] < torch.tensor([37, 20, 5], device=DEVICE)[:, None]
    with torch.no_grad():
        ref = net(x, mask, fused=False)
        out = net(x, mask, fused=True)
    assert out.dtype == dtype and out.shape == ref.shape
    err = (out.double() - ref.double()).abs().max().item()
    assert err <= _tol(ref.double(), dtype), err
    if dtype == torch.float32:  # the documented bound, and what the interpreter really gives
        assert err <= 1e-4 * (1 + ref.abs().max().item())


def test_fused_dispatch_rules():
    net = MimickingNetwork(dim=16, widths=(16,))
    x = torch.randn(2, 5, 16, device=DEVICE)
    with torch.no_grad():
        assert not fused_mod.should_fuse(net, x)  # training mode: never
        net.eval()
        assert fused_mod.should_fuse(net, x) == (DEVICE == "cuda")
    net.eval()
    assert not fused_mod.should_fuse(net, x)  # a gradient is needed
    with pytest.raises(RuntimeError, match="no backward"):
        net(x, fused=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, width", [(torch.float32, 64), (torch.bfloat16, 64), (torch.float32, 128),
                                          (torch.float32, 256), (torch.float64, 128), (torch.float16, 256)])
def test_fused_forward_at_base_size_on_gpu(dtype, width):
    net = _randomized(MimickingNetwork(dim=768, widths=(width,)), std=0.05).eval().cuda().to(dtype)
    x = torch.randn(8, 500, 768, device="cuda").to(dtype)
    with torch.no_grad():
        ref = net(x, fused=False)
        out = net(x)  # automatic dispatch: fused on CUDA in eval/no-grad
        assert fused_mod.should_fuse(net, x)
    err = (out.double() - ref.double()).abs().max().item()
    assert err <= _tol(ref.double(), dtype), err


# ---- replace_stack -------------------------------------------------------------------------------

@pytest.mark.parametrize("family, kw", VARIANTS)
def test_replace_stack_keeps_output_types_and_frame_lengths(family, kw):
    model = _model(family, kw)
    mimic = MimickingNetwork(dim=model.config.hidden_size, widths=(16, 8))
    new = replace_stack(model, mimic)
    x = torch.randn(2, 12000)
    am = torch.ones(2, 12000, dtype=torch.long)
    am[1, 7000:] = 0
    captured = {}
    hook = model.encoder.register_forward_pre_hook(
        lambda m, a, k: captured.__setitem__("x", (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
    with torch.no_grad():
        ref = model(x, attention_mask=am, output_hidden_states=True)
        out = new(x, attention_mask=am, output_hidden_states=True)
        plain = new(x, attention_mask=am)
        tup = new(x, return_dict=False)
    hook.remove()
    assert type(out) is type(ref)
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape
    assert len(out.hidden_states) == 3 and plain.hidden_states is None and isinstance(tup, tuple)
    if getattr(ref, "extract_features", None) is not None:
        assert torch.equal(out.extract_features, ref.extract_features)
    # the mimic's input is what the encoder received (the stack input), padding zeroed
    frames = model._get_feat_extract_output_lengths(torch.tensor([12000, 7000]))
    valid = torch.arange(out.hidden_states[0].shape[1])[None] < frames[:, None]
    assert torch.allclose(out.hidden_states[0][valid], captured["x"][valid], atol=1e-6)
    assert (out.hidden_states[0][~valid] == 0).all()
    with torch.no_grad():
        assert torch.allclose(out.last_hidden_state, mimic(out.hidden_states[0], valid), atol=1e-6)
    assert new._get_feat_extract_output_lengths(torch.tensor([12000])).item() == frames[0].item()
    # the runner and the probes take it as a model
    clips = [("a", np.random.default_rng(0).normal(size=9000).astype(np.float32)), ("b", np.ones(5000, np.float32))]
    batches = list(hidden_state_batches(new, clips, batch_size=2))
    assert sum(b.mask.sum().item() for b in batches) == sum(model._get_feat_extract_output_lengths(torch.tensor([9000, 5000])).tolist())
    assert all(len(b.hidden_states) == 3 for b in batches)


def test_replace_stack_with_an_adapter_masks_stack_frames():
    model = random_model("wav2vec2", "tiny", add_adapter=True, output_hidden_size=32)
    new = replace_stack(model, MimickingNetwork(dim=32))
    x = torch.randn(2, 16000)
    am = torch.ones(2, 16000, dtype=torch.long)
    am[1, 8000:] = 0
    with torch.no_grad():
        ref, out = model(x, attention_mask=am), new(x, attention_mask=am, output_hidden_states=True)
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape  # the adapter runs after the mimic
    valid = (out.hidden_states[0].abs().sum(-1) > 0).sum(1).tolist()
    assert valid == model._get_feat_extract_output_lengths(torch.tensor([16000, 8000]), add_adapter=False).tolist()


def test_replace_stack_errors_and_parameter_report():
    model = _model("wav2vec2", {})
    with pytest.raises(ValueError, match="hidden size"):
        replace_stack(model, MimickingNetwork(dim=8))
    with pytest.raises(TypeError, match="mimic"):
        replace_stack(model, torch.nn.Linear(32, 32))
    new = replace_stack(model, MimickingNetwork(dim=32))
    rep = parameter_report(model, new)
    stack = sum(p.numel() for p in model.encoder.parameters())
    extra = model.masked_spec_embed.numel()
    assert rep.mimicked == rep.teacher - stack - extra + new.mimic.num_parameters()
    assert 0 < rep.reduction < 1


# ---- distill -------------------------------------------------------------------------------------

def test_distillation_lowers_the_loss_substantially():
    model = _model("wav2vec2", {})
    r = distill(model, _noise_clips(), sample_rate=16000, steps=60, batch_size=4, progress=False)
    assert len(r.losses) == 60 and r.targets == (4,)
    assert r.final() < 0.4 * r.losses[0], (r.losses[0], r.final())
    # explains most of the targets' variance: better than predicting their mean (1.0)
    assert r.final(r.unexplained) < 0.6, r.final(r.unexplained)


def test_two_block_mimicker_trains_towards_an_intermediate_layer():
    model = _model("hubert", "stable")
    r = distill(model, _noise_clips(4), sample_rate=16000, steps=20, batch_size=4, progress=False, cache_targets=True,
                mimic=MimicConfig(dim=32, widths=(16, 16), targets=(2, -1)), loss="cosine")
    assert r.targets == (2, 4)
    assert r.final() < r.losses[0]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("cache", [False, True])
def test_checkpoints_round_trip_and_resume_exactly(tmp_path, cache):
    model = _model("wavlm", {})
    clips = _noise_clips(6)
    kw = dict(sample_rate=16000, batch_size=4, crop_seconds=0.75, progress=False, cache_targets=cache, checkpoint_every=2)
    full = distill(model, clips, steps=6, checkpoint_dir=tmp_path / "a", **kw)
    part = distill(model, clips, steps=3, checkpoint_dir=tmp_path / "b", **kw)
    assert json.load(open(tmp_path / "b" / "state.json"))["step"] == 3
    rest = distill(model, clips, steps=6, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert rest.start_step == 3 and len(rest.losses) == 3
    assert rest.losses == pytest.approx(full.losses[3:], rel=1e-5)
    assert _same_weights(rest.mimic, full.mimic) or all(
        torch.allclose(p, q, atol=1e-6) for p, q in zip(rest.mimic.parameters(), full.mimic.parameters()))
    loaded = MimickingNetwork.load(tmp_path / "a" / "mimic.safetensors")
    assert _same_weights(loaded, full.mimic) and loaded.config == full.mimic.config
    assert not _same_weights(part.mimic, full.mimic)
    with pytest.raises(ValueError, match="lr"):
        distill(model, clips, steps=6, checkpoint_dir=tmp_path / "b", resume=True, **{**kw, "lr": 1e-2})


@pytest.mark.parametrize("where", ["before the commit", "after the commit"])
def test_a_checkpoint_interrupted_while_saving_resumes_exactly(tmp_path, monkeypatch, where):
    """A run killed in the middle of writing a checkpoint: the files left must belong together, so
    the resumed run continues as the uninterrupted one would have (from step 2 or from step 4)."""
    from fastsim.mimic import checkpoint as dmod  # where a distillation's checkpoints are written

    model = _model("wav2vec2", "stable")
    clips = _noise_clips(6)
    kw = dict(sample_rate=16000, batch_size=4, crop_seconds=0.75, progress=False, checkpoint_every=2)
    full = distill(model, clips, steps=6, checkpoint_dir=tmp_path / "a", **kw)

    write_json, replace = dmod.write_json, os.replace

    class Killed(Exception):
        pass

    def dying_write_json(path, obj):  # dies as the step-4 state.json is about to be written
        if str(path).endswith("state.json") and obj["step"] == 4:
            raise Killed
        write_json(path, obj)

    moves = []

    def dying_replace(a, b):  # dies after the first file of the step-4 checkpoint moved into place
        promoting = os.path.basename(os.path.dirname(str(a))) == "next" != os.path.basename(os.path.dirname(str(b)))
        if promoting and json.load(open(tmp_path / "b" / "state.json"))["step"] == 4:
            moves.append(a)
            if len(moves) == 2:
                raise Killed
        replace(a, b)

    with monkeypatch.context() as m:
        if where == "before the commit":
            m.setattr(dmod, "write_json", dying_write_json)
        else:
            m.setattr(dmod.os, "replace", dying_replace)
        with pytest.raises(Killed):
            distill(model, clips, steps=6, checkpoint_dir=tmp_path / "b", **kw)
    at = 2 if where == "before the commit" else 4
    assert json.load(open(tmp_path / "b" / "state.json"))["step"] == at
    rest = distill(model, clips, steps=6, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert rest.start_step == at
    assert rest.losses == pytest.approx(full.losses[at:], rel=1e-5)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(rest.mimic.parameters(), full.mimic.parameters()))


def test_distill_on_one_frame_windows():
    """crop_seconds=0.025 (the documented minimum, one frame) with one clip per step: the targets
    have no variance within a batch, so there is no unexplained fraction, but training runs."""
    model = _model("wav2vec2", "stable")
    r = distill(model, _noise_clips(2), sample_rate=16000, crop_seconds=0.025, batch_size=1, steps=2, progress=False)
    assert len(r.losses) == 2 and all(np.isfinite(r.losses)) and np.isnan(r.final(r.unexplained))


def test_distill_errors_name_the_argument():
    model = _model("wav2vec2", {})
    with pytest.raises(ValueError, match="loss"):
        distill(model, _noise_clips(1), sample_rate=16000, loss="l1")
    with pytest.raises(ValueError, match="steps"):
        distill(model, _noise_clips(1), sample_rate=16000, steps=0)
    with pytest.raises(ValueError, match="hidden size"):
        distill(model, _noise_clips(1), sample_rate=16000, mimic=MimicConfig(dim=8))
    with pytest.raises(ValueError, match="audio"):
        distill(model, [np.zeros(10, np.float32)], sample_rate=16000)
    with pytest.raises(ValueError, match="adapter"):
        distill(random_model("wav2vec2", "tiny", add_adapter=True, output_hidden_size=32), _noise_clips(1), sample_rate=16000)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        distill(model, _noise_clips(1), sample_rate=16000, resume=True)


@pytest.mark.gpu
def test_distill_and_mimicked_model_on_gpu():
    model = _model("wav2vec2", "stable").cuda()
    r = distill(model, _noise_clips(4), sample_rate=16000, steps=5, batch_size=2, progress=False)
    assert next(r.mimic.parameters()).is_cuda and len(r.losses) == 5
    new = replace_stack(model, r.mimic).eval()
    x = torch.randn(2, 12000, device="cuda")
    with torch.no_grad():
        auto = new(x).last_hidden_state  # fused on CUDA
        h, _, _ = stack_input(model, x)
        plain = r.mimic(h, fused=False)
        assert fused_mod.should_fuse(r.mimic, h)  # (so `auto` above really ran the kernel)
    assert torch.allclose(auto, plain, atol=1e-4 * (1 + plain.abs().max().item()))


# ---- the fused kernel: its compile checks for real GPUs are in tests/kernels/test_kernel_gpu_targets.py

def test_fused_kernel_refuses_blocks_wider_than_its_limit():
    from fastsim.kernels.mimic_block import MAX_WIDTH

    net = MimickingNetwork(dim=8, widths=(MAX_WIDTH + 1,)).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="width"):
        net(torch.randn(1, 3, 8), fused=True)


# ---- Whisper -------------------------------------------------------------------------------------

def _whisper(seed=0):
    """A 3-layer x 32 Whisper encoder with Whisper's framing (80 mel bins, 30 s windows)."""
    from fastsim.speech import whisper

    return whisper.random_whisper("tiny", seed=seed, d_model=32, encoder_layers=3, encoder_attention_heads=2,
                                  encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64)


def test_replace_stack_for_whisper_takes_the_stack_input_and_replaces_layers_and_final_norm():
    from fastsim.mimic.timing import compare
    from fastsim.mimic.whisper_stack import MimickedWhisper
    from fastsim.speech import whisper

    model = _whisper()
    mimic = MimickingNetwork(dim=32, widths=(16, 8), context=3)
    new = replace_stack(model, mimic)
    assert isinstance(new, MimickedWhisper) and new.config.encoder_layers == 2 and model.config.encoder_layers == 3
    assert new.conv1 is model.conv1 and new.embed_positions is model.embed_positions
    waves = [w * 0.1 for w in _noise_clips(3, seed=4)]
    teacher = whisper.encode(model, waves, stack_input=True)
    out = whisper.encode(new, waves)
    assert out.frames == teacher.frames and len(out.hidden_states) == 3
    # input: the teacher's stack input on each clip's frames (conv + positions); the window's padding
    # frames are zeroed and masked, as the zero-padded training batches are
    torch.testing.assert_close(out.hidden_states[0], teacher.stack_input, rtol=0, atol=0)
    with torch.no_grad():
        direct = mimic(teacher.stack_input, teacher.mask, return_all=True)
    for a, b in zip(out.hidden_states[1:], direct):
        torch.testing.assert_close(a[teacher.mask], b[teacher.mask], rtol=1e-5, atol=1e-6)
    # the runner and the probes take it as a model
    batches = list(hidden_state_batches(new, [(str(i), w) for i, w in enumerate(waves)], batch_size=2))
    assert sum(int(b.mask.sum()) for b in batches) == sum(teacher.frames)
    # parameters: the layers and the final norm are what the mimic replaces
    rep = parameter_report(model, new)
    stack = sum(p.numel() for p in model.layers.parameters()) + sum(p.numel() for p in model.layer_norm.parameters())
    assert rep.stack == stack and rep.mimicked == rep.teacher - stack + mimic.num_parameters()
    t = compare(model, new, batch=1, clip_seconds=2.0, warmup=0, repeats=1)
    assert t.clip_seconds == 30.0 and t.full_s > 0 and t.mimic_s > 0  # a Whisper clip always costs a 30 s window


def test_distill_whisper_targets_the_output_after_the_final_norm():
    from fastsim.mimic.distill import Teacher
    from fastsim.speech import whisper

    model = _whisper()
    waves = [w * 0.1 for w in _noise_clips(6, seed=5)]
    (x, (target,)), = Teacher(model, (3,))([waves[0]])
    ref = whisper.encode(model, [waves[0]], stack_input=True)
    torch.testing.assert_close(x, ref.stack_input[0], rtol=0, atol=0)
    torch.testing.assert_close(target, ref.last_hidden_state[0], rtol=0, atol=0)  # after the final layer norm
    r = distill(model, waves, sample_rate=16000, steps=40, batch_size=3, cache_targets=True, progress=False)
    assert r.targets == (3,) and r.final() < 0.5 * r.losses[0]
