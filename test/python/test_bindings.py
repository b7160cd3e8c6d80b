"""The Python module against independent references: NumPy round trips, gradients and Hessian-vector
products against float64 finite differences, training from Python against the command line's own run
(bit for bit), and a loaded model's forward pass against its own evaluation and summary.

Run with the module on the path: PYTHONPATH=build/python TAPEGROK_BINARY=build/tapegrok python3 -m pytest test/python
"""

import json
import os
import subprocess

import numpy as np
import pytest

import tapegrok as tg

BINARY = os.environ.get("TAPEGROK_BINARY", os.path.join(os.path.dirname(__file__), "../../build/tapegrok"))

# The small run of the C++ tests (test/run_support.cpp): a+b mod 11, width 16, 1 layer.
TINY = dict(task="a+b", modulus=11, width=16, heads=2, layers=1, batch_size=16, eval_every=8, lr=3e-3, device="cpu")


def cli_flags(settings):
    out = []
    for key, value in settings.items():
        out += ["--" + key.replace("_", "-"), str(value)]
    return out


def test_numpy_round_trips_keep_values_dtype_and_layout():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64, np.int32):
        a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
        t = tg.Tensor(a)
        assert t.shape == (3, 4, 5)
        assert t.dtype == {np.float32: "f32", np.float64: "f64", np.int32: "i32"}[dtype]
        back = t.numpy()
        assert back.dtype == dtype and np.array_equal(back, a)
        assert not back.flags.writeable
    # Python ints (int64) become int32 when they fit; a strided engine view comes back with its strides.
    assert tg.Tensor([[1, 2], [3, 4]]).dtype == "i32"
    x = tg.Tensor(np.arange(12.0).reshape(3, 4))
    assert np.array_equal(tg.transpose(x, 0, 1).numpy(), np.arange(12.0).reshape(3, 4).T)
    assert np.array_equal(np.asarray(x), np.arange(12.0).reshape(3, 4))
    with pytest.raises(tg.Error, match="does not fit int32"):
        tg.Tensor(np.array([2**40]))
    with pytest.raises(tg.Error, match="float16"):
        tg.Tensor(np.zeros(3, dtype=np.float16))


def test_the_view_outlives_its_tensor():
    t = tg.Tensor(np.arange(6.0))
    view = t.numpy()
    del t
    assert np.array_equal(view, np.arange(6.0))


def test_subnormal_flush_is_switchable_from_python():
    # 1e-30 * 1e-10 = 1e-40 is below float32's smallest normal number (1.2e-38): NumPy keeps IEEE gradual
    # underflow, the engine's CPU kernels flush it to zero unless told not to.
    a, b = np.full(8, 1e-30, dtype=np.float32), np.full(8, 1e-10, dtype=np.float32)
    ieee = a * b
    assert ieee[0] != 0
    was = tg.flush_subnormals()
    try:
        tg.set_flush_subnormals(True)
        assert tg.flush_subnormals()
        assert np.array_equal(tg.mul(tg.Tensor(a), tg.Tensor(b)).numpy(), np.zeros(8, dtype=np.float32))
        tg.set_flush_subnormals(False)
        assert not tg.flush_subnormals()
        assert np.array_equal(tg.mul(tg.Tensor(a), tg.Tensor(b)).numpy(), ieee)
    finally:
        tg.set_flush_subnormals(was)
    assert tg.openblas_core()  # the kernels the GEMMs run on, as config.json records them


def test_engine_errors_arrive_with_the_engines_message():
    a, b = tg.Tensor(np.ones((2, 3))), tg.Tensor(np.ones((4, 5)))
    with pytest.raises(tg.Error, match="matmul"):
        tg.matmul(a, b)
    assert issubclass(tg.Error, RuntimeError)


def f64(shape, seed, requires_grad=True):
    return tg.Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


def loss_of(x, w, target):
    # A small model: mean cross-entropy of gelu(x @ w) rows, in float64.
    return tg.cross_entropy(tg.gelu(tg.matmul(x, w)), target)


def test_gradients_match_float64_finite_differences():
    x, w = f64((5, 4), 1), f64((4, 3), 2)
    target = tg.Tensor(np.array([0, 2, 1, 1, 0], dtype=np.int32))
    tg.clear_tape()
    loss = loss_of(x, w, target)
    gx, gw = tg.grad([loss], [x, w])
    h = 1e-6
    for tensor, g in ((x, gx), (w, gw)):
        base = tensor.numpy().copy()
        numeric = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[i] += sign * h
                args = [tg.Tensor(shifted) if tensor is x else x.detach(), tg.Tensor(shifted) if tensor is w else w.detach()]
                numeric[i] += sign * loss_of(args[0], args[1], target).item() / (2 * h)
        assert np.linalg.norm(g.numpy() - numeric) <= 1e-7 * np.linalg.norm(numeric)

    # backward() accumulates the same gradient into .grad.
    tg.clear_tape()
    loss_of(x, w, target).backward()
    assert np.allclose(w.grad.numpy(), gw.numpy(), rtol=0, atol=1e-14)
    w.zero_grad()
    assert w.grad is None


def test_hessian_vector_product_matches_differences_of_gradients():
    x, w = f64((5, 4), 3, requires_grad=False), f64((4, 3), 4)
    target = tg.Tensor(np.array([2, 0, 1, 2, 1], dtype=np.int32))
    v = np.random.default_rng(5).standard_normal((4, 3))
    tg.clear_tape()
    (hv,) = tg.hvp(loss_of(x, w, target), [w], [tg.Tensor(v)])
    h = 1e-5

    def gradient_at(wv):
        tg.clear_tape()
        leaf = tg.Tensor(wv, requires_grad=True)
        return tg.grad([loss_of(x, leaf, target)], [leaf])[0].numpy()

    numeric = (gradient_at(w.numpy() + h * v) - gradient_at(w.numpy() - h * v)) / (2 * h)
    assert np.linalg.norm(hv.numpy() - numeric) <= 1e-6 * np.linalg.norm(numeric)


def test_no_grad_records_nothing():
    w = f64((3,), 6)
    tg.clear_tape()
    with tg.no_grad():
        y = tg.sum(tg.square(w))
    assert tg.tape_size() == 0 and not y.requires_grad
    assert tg.sum(tg.square(w)).requires_grad


def test_training_from_python_equals_the_command_line_bit_for_bit(tmp_path):
    seen = []
    run = tg.train(steps=24, seed=3, run_dir=str(tmp_path / "py"), callback=seen.append, **TINY)
    cli_dir = tmp_path / "cli"
    subprocess.run([BINARY, "train", *cli_flags(TINY), "--steps", "24", "--seed", "3", "--no-progress",
                    "--run-dir", str(cli_dir)], check=True, capture_output=True)

    def records(d):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        for r in rows:
            r.pop("wall_time")
        return rows

    assert records(run.run_dir) == records(cli_dir)
    assert len(seen) == 3 and [r["step"] for r in seen] == [8, 16, 24]
    assert [r["test_acc"] for r in seen] == list(run.metrics["test_acc"])
    assert run.config == json.load(open(cli_dir / "config.json")) | {"run_dir": run.run_dir}
    assert run.summary["step"] == 24

    # The loaded model's forward pass gives the accuracy its evaluation and the summary report.
    model = run.load()
    data = model.dataset
    test = data["test"]
    logits = model.forward(data["inputs"][test])
    accuracy = np.mean(np.argmax(logits, axis=1) == data["targets"][test])
    assert accuracy == model.evaluate("test")["accuracy"] == run.summary["last_test_acc"]
    assert model.step == 24
    params = model.parameters
    assert "layers.0.attn.in_proj_weight" in params and params["token_embeddings.weight"].shape[0] == 13
    # Views, not copies: the same memory each time, read-only.
    again = model.parameters["token_embeddings.weight"]
    assert again.__array_interface__["data"][0] == params["token_embeddings.weight"].__array_interface__["data"][0]
    assert not again.flags.writeable


def test_callback_errors_and_bad_settings_stop_the_run_clearly(tmp_path):
    def stop(record):
        raise KeyboardInterrupt("stop at " + str(record["step"]))

    with pytest.raises(KeyboardInterrupt, match="stop at 8"):
        tg.train(steps=24, run_dir=str(tmp_path / "stopped"), callback=stop, **TINY)
    with pytest.raises(TypeError, match="unknown setting 'learning_rate'"):
        tg.train(steps=1, learning_rate=0.1, **{k: v for k, v in TINY.items() if k != "lr"})
    with pytest.raises(tg.Error, match="--lr"):
        tg.train(steps=1, **(TINY | {"lr": -1.0}))
    with pytest.raises(tg.Error, match="not a readable file|No such file|cannot open"):
        tg.load(str(tmp_path / "missing.safetensors"))


def test_train_flags_come_from_the_command_line():
    flags = tg.train_flags()
    assert flags["weight_decay"]["flag"] == "--weight-decay" and flags["weight_decay"]["default"] == "0.001"
    assert flags["cuda_graph"]["switch"] and not flags["steps"]["switch"]
