"""Bad input that used to end in a traceback: each class is one line on stderr naming the field and
exit code 2, refused before anything is allocated or written (issue 10, section 3).

The table builds each description from a small valid one (two steps of a 2-3-2 network) with one
field spoiled; the memory cases fix the available memory (monkeypatched) so the verdict does not
depend on the machine running the tests.
"""
import copy
import errno
import importlib.util
import json
import math
import os

import pytest

import manual.data
import manual.init
from manual.lr_scheduler import ExponentialLR, StepLR
from torch_ref.cli import main as cli
from torch_ref.description import fits, spec, files as specfile
from torch_ref.lockstep import run as lockstep_module
from torch_ref import reports

BASE = {"network": {"sizes": [2, 3, 2], "activation": "tanh", "loss": "mse"},
        "init": {"seed": 0}, "optimizer": {"name": "sgd", "lr": 0.1},
        "data": {"random": {"n": 4}, "batch_size": 2}, "run": {"steps": 2}}
GIB = 1 << 30


def spoiled(*changes):
    """BASE with (path, value) changes; a path is a tuple of keys, value None deletes."""
    d = copy.deepcopy(BASE)
    for path, value in changes:
        t = d
        for k in path[:-1]:
            t = t.setdefault(k, {})
        if value is None:
            del t[path[-1]]
        else:
            t[path[-1]] = copy.deepcopy(value)  # a shared value (IMG) stays unchanged
    return d


F32 = (("run", "dtype"), "float32")
IMG = (("network",), {"sizes": [64, 3, 3], "activation": "tanh", "loss": "cross_entropy"})  # bars of 8×8
BAD = [  # (id, description, the field the message must start with)
    # a wrong JSON/TOML type where a string, a table or a list is expected
    ("scheme-list", spoiled((("init", "scheme"), ["xavier_uniform"])), "init.scheme"),
    ("scheme-table", spoiled((("init", "scheme"), {})), "init.scheme"),
    ("section-list", spoiled((("optimizer",), ["sgd"])), "optimizer"),
    ("sizes-table", spoiled((("network", "sizes"), {"a": 2})), "network.sizes"),
    ("activation-table-list", spoiled((("network", "activation"), {"name": ["tanh"]})), "network.activation.name"),
    ("random-list", spoiled((("data", "random"), [4])), "data.random"),
    ("betas-string", spoiled((("optimizer",), {"name": "adam", "betas": "0.9"})), "optimizer.betas"),
    ("steps-string", spoiled((("run", "steps"), "2")), "run.steps"),
    # numbers beyond the float range, or not finite
    ("lr-400-digits", spoiled((("optimizer", "lr"), 10 ** 400)), "optimizer.lr"),
    ("beta-400-digits", spoiled((("optimizer",), {"name": "adam", "betas": [10 ** 400, 0.9]})), "optimizer.betas[0]"),
    ("norm_type-400-digits", spoiled((("clip",), {"max_norm": 1.0, "norm_type": 10 ** 400})), "clip.norm_type"),
    ("kaiming-a-1e308", spoiled((("init",), {"seed": 0, "scheme": "kaiming_uniform", "a": 1e308})), "init.a"),
    ("xavier-param-1e308", spoiled((("init",), {"seed": 0, "scheme": "xavier_normal", "nonlinearity": "leaky_relu",
                                                "param": 1e308})), "init.param"),
    ("xavier-gain-1e308-normal", spoiled((("init",), {"seed": 0, "scheme": "xavier_normal", "gain": 1e308})),
     "init.gain"),
    ("gain-inf", spoiled((("init",), {"seed": 0, "scheme": "xavier_uniform", "gain": math.inf})), "init.gain"),
    ("noise-nan", spoiled((("data",), {"toy": {"name": "linear", "noise": math.nan}})), "data.toy.noise"),
    # image sets ([data] images): bad values, and images that cannot be the network's input or classes
    *[(f"images-{key}", spoiled(IMG, (("data",), {"images": {"name": "bars", "size": 8, **value}})), field)
      for key, value, field in [
          ("name", {"name": "spirals"}, "data.images.name"),
          ("name-list", {"name": ["bars"]}, "data.images.name"),
          ("n", {"n": 0}, "data.images.n"),
          ("size-small", {"size": 3}, "data.images.size"),
          ("size-float", {"size": 8.0}, "data.images.size"),
          ("channels", {"channels": 0}, "data.images.channels"),
          ("seed", {"seed": -1}, "data.images.seed"),
          ("noise", {"noise": -0.5}, "data.images.noise"),
          ("noise-nan", {"noise": math.nan}, "data.images.noise"),
          ("noise-string", {"noise": "0.1"}, "data.images.noise"),
          ("unknown-key", {"colour": 1}, "data.images.colour"),
          ("inputs", {"size": 9}, "data.images.size"),
          ("inputs-channels", {"channels": 2}, "data.images.size"),
          ("classes", {"name": "digits"}, "data.images.name"),  # 10 classes (or no scikit-learn)
          ("digits-size", {"name": "digits", "size": 12}, "data.images.size"),
      ]],
    ("images-digits-n", spoiled(IMG, (("network", "sizes"), [64, 3, 10]),
                                (("data",), {"images": {"name": "digits", "n": 2000}})),
     "data.images.n" if importlib.util.find_spec("sklearn") else "data.images.name"),
    ("images-table", spoiled((("data",), {"images": ["bars"]})), "data.images"),
    ("images-and-random", spoiled(IMG, (("data", "images"), {"name": "bars", "size": 8})), "data"),
    ("images-and-toy", spoiled(IMG, (("data",), {"images": {"name": "bars", "size": 8}, "toy": {"name": "xor"}})),
     "data"),
    # counts and seeds beyond int64
    ("seed-400-digits", spoiled((("init", "seed"), 10 ** 400)), "init.seed"),
    ("T_max-400-digits", spoiled((("scheduler",), {"name": "cosine", "T_max": 10 ** 400})), "scheduler.T_max"),
    ("batch-2**63", spoiled((("data", "batch_size"), 2 ** 63)), "data.batch_size"),
    ("size-2**63", spoiled((("network", "sizes"), [2, 2 ** 63, 2])), "network.sizes[1]"),
    # float32 hyper-parameters and data beyond float32 (torch raises on the scalars)
    ("f32-lr", spoiled(F32, (("optimizer", "lr"), 1e300)), "optimizer.lr"),
    ("f32-eps", spoiled(F32, (("optimizer",), {"name": "adam", "eps": 1e39})), "optimizer.eps"),
    ("f32-slope", spoiled(F32, (("network", "activation"), {"name": "leaky_relu", "negative_slope": 1e300})),
     "network.activation.negative_slope"),
    ("f32-slope-layer", spoiled(F32, (("network", "activation"), ["tanh", {"name": "elu", "alpha": -1e39}])),
     "network.activation[1].alpha"),
    ("f32-huber", spoiled(F32, (("network", "loss"), {"name": "huber", "delta": 1e300})), "network.loss.delta"),
    ("f32-clip", spoiled(F32, (("clip",), {"clip_value": 1e40})), "clip.clip_value"),
    ("f32-x", spoiled(F32, (("data",), {"x": [[1.0, -1e300]], "y": [[0.0, 1.0]]})), "data.x[0][1]"),
    ("f32-gain", spoiled(F32, (("init",), {"seed": 0, "scheme": "xavier_uniform", "gain": 3.3e38})), "init.gain"),
    # a learning-rate schedule that leaves the range within run.steps
    ("schedule-f64", spoiled((("scheduler",), {"name": "exponential", "gamma": 1e10}), (("run", "steps"), 40)),
     "scheduler.gamma"),
    ("schedule-f32", spoiled(F32, (("scheduler",), {"name": "step", "step_size": 2, "gamma": 1e5}),
                             (("run", "steps"), 20)), "scheduler.gamma"),
    # keys that would break the line or drive the terminal: quoted
    ("key-newline", spoiled((("network", "bad\nkey"), 1)), 'network."bad\\nkey"'),
    ("key-escape", spoiled((("optimizer", "\x1b[31mred"), 1)), 'optimizer."\\u001b[31mred"'),
    ("section-newline", spoiled((("x\ny",), {})), '"x\\ny"'),
    ("value-escape", spoiled((("network", "activation"), "tanh\x1b[2J")), "network.activation"),
    # deeply nested tables and lists, within what the parser accepts
    ("nested-list", spoiled((("network", "sizes"), json.loads("[" * 60 + "]" * 60))), "network.sizes[0]"),
]


def run_bad(tmp_path, capsys, text, suffix=".json", extra=()):
    f = tmp_path / f"bad{suffix}"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = cli.main(["run", str(f), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code, out, err, field):
    assert code == 2, err
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.isprintable() or err[:-1].isprintable(), repr(err)
    assert "Traceback" not in err
    assert err.startswith(f"backprop-check: error: {field}:"), err


@pytest.mark.parametrize("desc,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_description_is_one_line_naming_the_field(tmp_path, capsys, desc, field):
    assert_one_line(*run_bad(tmp_path, capsys, json.dumps(desc)), field)


def test_a_value_with_an_escape_is_echoed_escaped(tmp_path, capsys):
    desc = spoiled((("network", "activation"), "tanh\x1b[2J\nx"))
    code, out, err = run_bad(tmp_path, capsys, json.dumps(desc))
    assert_one_line(code, out, err, "network.activation")
    assert "\x1b" not in err and "\\x1b[2J\\nx" in err


def test_a_huge_value_is_not_echoed_whole(tmp_path, capsys):
    desc = spoiled((("network", "sizes"), [0] * 100000))
    code, out, err = run_bad(tmp_path, capsys, json.dumps(desc))
    assert_one_line(code, out, err, "network.sizes")
    assert len(err) < 300


FILES = [  # (id, bytes of the file, suffix, what the message says)
    ("latin-1", '[network]\nactivation = "tanh"  # café\n'.encode("latin-1"), ".toml", "not UTF-8 text: byte 0xe9"),
    ("utf-16", json.dumps(BASE).encode("utf-16"), ".json", "not UTF-8 text: byte 0xff at offset 0"),
    ("deep-json", b"[" * 100000 + b"]" * 100000, ".json", "JSON nested too deeply"),
    ("deep-toml-array", b"a = " + b"[" * 100000 + b"]" * 100000, ".toml", "TOML nested too deeply"),
    ("deep-toml-table", b"a = " + b"{b = " * 50000 + b"1" + b"}" * 50000, ".toml", "TOML nested too deeply"),
    ("json-digits", b'{"run": {"steps": ' + b"9" * 5000 + b"}}", ".json", "is not valid JSON"),
]


@pytest.mark.parametrize("data,suffix,needle", [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_unreadable_file_is_one_line(tmp_path, capsys, data, suffix, needle):
    code, out, err = run_bad(tmp_path, capsys, data, suffix)
    assert_one_line(code, out, err, "SPEC")
    assert needle in err


def test_a_file_larger_than_the_cap_is_refused_unread(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(specfile, "MAX_FILE_BYTES", 1000)
    code, out, err = run_bad(tmp_path, capsys, json.dumps(BASE) + " " * 1000)
    assert_one_line(code, out, err, "SPEC")
    assert "larger than" in err


@pytest.mark.parametrize("make", ["fifo", "char-device", "directory"])
def test_not_a_regular_file_is_refused_without_reading(tmp_path, capsys, make):
    """A FIFO without a writer would block the read forever; /dev/zero would never end."""
    if make == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = tmp_path / "spec.toml"
        os.mkfifo(path)
    elif make == "char-device":
        path = "/dev/zero"
        if not os.path.exists(path):
            pytest.skip("no /dev/zero here")
    else:
        path = tmp_path
    assert cli.main(["run", str(path), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert_one_line(2, captured.out, captured.err, "SPEC")


def must_not_allocate(*args, **kwargs):
    raise AssertionError("allocated before the refusal")


MEMORY = [  # (id, changes, extra arguments, the field named), with 1 GiB available
    ("sizes", [(("network", "sizes"), [100000, 100000, 10])], (), "network.sizes"),
    ("random.n", [(("data", "random"), {"n": 10 ** 9})], (), "data.random.n"),
    ("toy.n", [(("data",), {"toy": {"name": "xor", "n": 10 ** 9}})], (), "data.toy.n"),
    ("images.n", [IMG, (("data",), {"images": {"name": "bars", "size": 8, "n": 10 ** 8}})], (), "data.images.n"),
    ("batch", [(("network", "sizes"), [2, 4000, 2]), (("data",), {"random": {"n": 10 ** 6}, "batch_size": 10 ** 6})],
     (), "data.batch_size"),
    ("history", [], ("--steps", "100000000", "--report", "REPORT"), "run.steps"),
]


@pytest.mark.parametrize("changes,extra,field", [m[1:] for m in MEMORY], ids=[m[0] for m in MEMORY])
def test_a_run_beyond_the_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch, changes, extra, field):
    monkeypatch.setattr(fits, "available_memory", lambda: GIB)
    for module, name in ((manual.init, "initial_state"), (manual.data, "dataset"), (lockstep_module, "History")):
        monkeypatch.setattr(module, name, must_not_allocate)
    report = tmp_path / "run.json"
    extra = [str(report) if a == "REPORT" else a for a in extra]
    code, out, err = run_bad(tmp_path, capsys, json.dumps(spoiled(*changes)), extra=extra)
    assert_one_line(code, out, err, field)
    assert "this machine has 1 GiB available" in err
    assert not report.exists()


def test_the_memory_estimate_lets_an_ordinary_run_through(tmp_path, capsys, monkeypatch):
    """The same limit passes the base description, with a report of 1000 steps."""
    monkeypatch.setattr(fits, "available_memory", lambda: GIB)
    desc = spec.parse(spoiled((("run", "steps"), 1000)))
    assert sum(fits.memory_estimate(desc, record=True).values()) < GIB / 1000


def test_overriding_the_dtype_checks_the_range_again(tmp_path, capsys):
    code, out, err = run_bad(tmp_path, capsys, json.dumps(spoiled((("optimizer", "lr"), 1e300))),
                             extra=("--dtype", "float32"))
    assert_one_line(code, out, err, "optimizer.lr")


@pytest.mark.parametrize("flag,name", [("--report", "run.json"), ("--markdown", "run.md")])
def test_a_write_error_after_the_run_is_one_line_and_keeps_the_old_file(tmp_path, capsys, monkeypatch, flag, name):
    """Disk full at the end of the write: exit 2, one line naming the flag, the old report intact
    and no temporary file left beside it."""
    target = tmp_path / name
    target.write_text("the previous report")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(reports.os, "fsync", full)
    code, out, err = run_bad(tmp_path, capsys, json.dumps(BASE), extra=(flag, str(target)))
    assert_one_line(code, out, err, flag)
    assert os.strerror(errno.ENOSPC) in err
    assert target.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bad.json", name])


def torch_lrs(base, gamma, steps, step_size=None):
    """torch.optim.lr_scheduler's learning rates (recursive: lr · γ per step)."""
    import torch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = (torch.optim.lr_scheduler.ExponentialLR(opt, gamma) if step_size is None
             else torch.optim.lr_scheduler.StepLR(opt, step_size, gamma))
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


class _Opt:
    def __init__(self, lr):
        self.lr = lr


@pytest.mark.parametrize("base,gamma,step_size", [(1e-300, 1e10, None), (1e-300, 1e10, 3), (1.0, 1e200, None)])
def test_a_schedule_beyond_the_float_range_follows_torch(base, gamma, step_size):
    """γ^t alone overflows (Python raises OverflowError) while lr₀·γ^t may still fit: the manual
    schedule gives torch's value, finite where torch's is, inf where torch's is."""
    steps = 70 if step_size is None else 200
    opt = _Opt(base)
    sched = ExponentialLR(opt, gamma) if step_size is None else StepLR(opt, step_size, gamma)
    manual_lrs = []
    for _ in range(steps):
        manual_lrs.append(opt.lr)
        sched.step()
    expected = torch_lrs(base, gamma, steps, step_size)
    assert [math.isinf(v) for v in manual_lrs] == [math.isinf(v) for v in expected]
    assert any(math.isinf(v) for v in expected) and any(math.isfinite(v) and v > 1 for v in expected)
    for m, t in zip(manual_lrs, expected):
        assert m == t or math.isclose(m, t, rel_tol=1e-9)
