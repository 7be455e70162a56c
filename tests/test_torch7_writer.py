"""tests/torch7_writer.py: byte-exact against Torch7's format, and round trips through torchfile.

torchfile (the PyPI reader) gives back bytes for strings and type names, 0-based lists for
Lua arrays and ``TorchObject`` for ``nn``/``cudnn`` modules; see the writer's docstring.
"""

import struct

import numpy as np
import pytest
import torchfile
from torch7_writer import cuda, module, save, serialize


def _load(tmp_path, obj, **kwargs):
    """Saves ``obj`` with the writer and reads it back with torchfile."""
    return torchfile.load(str(save(tmp_path / "obj.t7", obj)), **kwargs)


def _odd_floats(rng, shape):
    """float32 values that a lossy or byte-swapped path would not keep bit for bit."""
    a = rng.standard_normal(shape).astype(np.float32)
    flat = a.reshape(-1)
    flat[:5] = [-0.0, np.inf, -np.inf, np.nan, 1e-45]  # 1e-45: the smallest denormal
    return a


def _int(v):
    return struct.pack("<i", v)


def _long(v):
    return struct.pack("<q", v)


def _str(s):
    return _int(len(s)) + s


def test_module_tree_round_trip(tmp_path, rng):
    conv_w = _odd_floats(rng, (8, 3, 3, 3))
    bn = {k: rng.standard_normal(8).astype(np.float32) for k in ("w", "b", "mean")}
    bn["var"] = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    tree = module(
        "nn.Sequential",
        modules=[
            module(
                "cudnn.SpatialConvolution",
                weight=cuda(conv_w),
                bias=None,
                nInputPlane=3,
                nOutputPlane=8,
                kW=3,
                kH=3,
                dW=2,
                dH=2,
                padW=1,
                padH=1,
                _type="torch.CudaTensor",
            ),
            module(
                "nn.SpatialBatchNormalization",
                weight=bn["w"],
                bias=bn["b"],
                running_mean=bn["mean"],
                running_var=bn["var"],
                eps=1e-5,
                momentum=0.1,
                affine=True,
            ),
            module("nn.ReLU", inplace=True),
        ],
        train=False,
    )
    seq = _load(tmp_path, tree)

    assert isinstance(seq, torchfile.TorchObject)
    assert seq._typename == b"nn.Sequential" and seq.torch_typename() == b"nn.Sequential"
    assert seq._version_number == 1
    assert seq.train is False
    assert set(seq._obj) == {b"modules", b"train"}
    assert seq["modules"] is seq.modules and isinstance(seq.modules, list)
    assert [m._typename for m in seq.modules] == [
        b"cudnn.SpatialConvolution",
        b"nn.SpatialBatchNormalization",
        b"nn.ReLU",
    ]
    conv, norm, relu = seq.modules

    assert conv.weight.dtype == np.float32 and conv.weight.shape == (8, 3, 3, 3)
    assert conv.weight.tobytes() == conv_w.tobytes()  # bit for bit, NaN and -0.0 included
    assert conv.bias is None and b"bias" not in conv._obj  # Lua drops nil fields
    sizes = {k: conv[k] for k in ("nInputPlane", "nOutputPlane", "kW", "kH", "dW", "dH")}
    assert sizes == {"nInputPlane": 3, "nOutputPlane": 8, "kW": 3, "kH": 3, "dW": 2, "dH": 2}
    assert type(conv.padW) is int and conv.padW == 1 and conv.padH == 1
    assert conv._type == b"torch.CudaTensor"

    for field, key in [("weight", "w"), ("bias", "b"), ("running_mean", "mean")]:
        np.testing.assert_array_equal(norm[field], bn[key])
        assert norm[field].dtype == np.float32 and norm[field].shape == (8,)
    np.testing.assert_array_equal(norm.running_var, bn["var"])
    assert norm.eps == 1e-5 and norm.momentum == 0.1 and norm.affine is True
    assert relu.inplace is True


def test_shared_objects_are_written_once_and_come_back_identical(tmp_path, rng):
    w = rng.standard_normal((4, 5)).astype(np.float32)
    gpu = cuda(np.arange(3, dtype=np.float32))
    relu = module("nn.ReLU", gradInput=w)
    table = {"x": 1}
    # Later references sit behind tensors (2 indices each: tensor, storage) and modules
    # (2 indices: object, field table), so a miscounted index would resolve to another object.
    tree = {
        "w": w,
        "relu": relu,
        "gpu": gpu,
        "table": table,
        "seq": module("nn.Sequential", modules=[relu, module("nn.Identity", gradInput=w)]),
        "relu_again": relu,
        "w_again": w,
        "gpu_again": gpu,
        "table_again": table,
    }
    out = _load(tmp_path, tree)

    assert out[b"relu"] is out[b"relu_again"] is out[b"seq"].modules[0]
    assert out[b"w"] is out[b"w_again"] is out[b"relu"].gradInput
    assert out[b"w"] is out[b"seq"].modules[1].gradInput
    assert out[b"gpu"] is out[b"gpu_again"]
    assert out[b"table"] is out[b"table_again"] and out[b"table"][b"x"] == 1
    np.testing.assert_array_equal(out[b"w"], w)
    np.testing.assert_array_equal(out[b"gpu"], gpu.array)
    # Two distinct but equal arrays stay two objects.
    twice = _load(tmp_path, {"a": w, "b": w.copy()})
    assert twice[b"a"] is not twice[b"b"]
    # The second occurrence costs a key (tag + double) and a reference (tag + index) only.
    assert len(serialize([w, w])) == len(serialize([w])) + 12 + 8


def test_lua_arrays_come_back_as_zero_based_lists(tmp_path):
    out = _load(
        tmp_path,
        {
            "strings": ["a", "b", "c"],
            "numbers": (3, 1, 2),
            "nested": [[1, 2], ["x"]],
            "int_keys": {2: "two", 1: "one"},  # keys 1..n: Lua cannot tell it from a list
            "hole": ["a", None, "c"],  # nil is no value in Lua: keys 1 and 3 remain
            "sparse": {1: "one", 5: "five"},
            "empty_list": [],
            "empty_dict": {},
        },
    )
    assert out[b"strings"] == [b"a", b"b", b"c"]
    assert out[b"numbers"] == [3, 1, 2]
    assert out[b"nested"] == [[1, 2], [b"x"]]
    assert out[b"int_keys"] == [b"one", b"two"]
    assert isinstance(out[b"hole"], dict) and dict(out[b"hole"]) == {1: b"a", 3: b"c"}
    assert dict(out[b"sparse"]) == {1: b"one", 5: b"five"}
    assert out[b"empty_list"] == [] and out[b"empty_dict"] == []  # an empty table is a list
    # torchfile's attribute access on tables looks up the bytes key, None when absent.
    assert out.strings is out[b"strings"] and out.missing is None


def test_scalars(tmp_path):
    out = _load(
        tmp_path,
        {
            "text": "héllo",
            "raw": b"a\x00b",
            "int": 7,
            "negative": -3,
            "big": 2**40,
            "float": 2.5,
            "whole_float": 1.0,
            "np_float": np.float32(0.25),
            "np_int": np.int64(9),
            "true": True,
            "false": False,
            "np_bool": np.bool_(True),
            "none": None,
            5: "number key",
        },
    )
    assert out[b"text"] == "héllo".encode() and out[b"raw"] == b"a\x00b"
    assert out[b"int"] == 7 and out[b"negative"] == -3 and out[b"big"] == 2**40
    assert type(out[b"float"]) is float and out[b"float"] == 2.5
    assert type(out[b"whole_float"]) is int and out[b"whole_float"] == 1  # torchfile's int cast
    assert out[b"np_float"] == 0.25 and out[b"np_int"] == 9
    assert out[b"true"] is True and out[b"false"] is False and out[b"np_bool"] is True
    assert b"none" not in out and out[5] == b"number key"
    assert _load(tmp_path, None) is None
    assert _load(tmp_path, 0.5) == 0.5
    assert _load(tmp_path, "top") == b"top"
    decoded = _load(
        tmp_path, {"text": "héllo", "m": module("nn.ReLU", x=1)}, utf8_decode_strings=True
    )
    assert decoded["text"] == "héllo" and decoded["m"]._typename == b"nn.ReLU"  # still bytes


@pytest.mark.parametrize(
    "dtype,on_cuda,tensor_class",
    [
        (np.float32, False, b"torch.FloatTensor"),
        (np.float32, True, b"torch.CudaTensor"),
        (np.float64, False, b"torch.DoubleTensor"),
        (np.float64, True, b"torch.CudaDoubleTensor"),
        (np.int64, False, b"torch.LongTensor"),
        (np.int32, False, b"torch.IntTensor"),
        (np.int16, False, b"torch.ShortTensor"),
        (np.int8, False, b"torch.CharTensor"),
        (np.uint8, False, b"torch.ByteTensor"),
    ],
)
def test_tensor_types(tmp_path, rng, dtype, on_cuda, tensor_class):
    low = 0 if dtype == np.uint8 else -100
    array = rng.uniform(low, 100, (2, 1, 3, 4)).astype(dtype)
    obj = cuda(array) if on_cuda else array
    data = serialize(obj)
    storage_class = tensor_class.replace(b"Tensor", b"Storage")
    assert data.startswith(_int(4) + _int(1) + _str(b"V 1") + _str(tensor_class))
    assert _str(storage_class) in data
    out = _load(tmp_path, obj)
    assert out.dtype == dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_any_layout_is_written_contiguous(tmp_path, rng):
    base = rng.standard_normal((6, 8)).astype(np.float64)
    views = {
        "transposed": base.T,
        "strided": base[::2, 1::3],
        "fortran": np.asfortranarray(base),
        "big_endian": base.astype(">f8"),
    }
    out = _load(tmp_path, views)
    for name, view in views.items():
        got = out[name.encode()]
        assert got.flags.c_contiguous and got.dtype == np.float64, name
        np.testing.assert_array_equal(got, view, err_msg=name)


def test_golden_bytes():
    """The exact bytes of torch.save for a tensor and a module (torch7 File.lua, Tensor.c)."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = (
        _int(4) + _int(1) + _str(b"V 1") + _str(b"torch.FloatTensor")
        + _int(2) + _long(2) + _long(3) + _long(3) + _long(1) + _long(1)
        + _int(4) + _int(2) + _str(b"V 1") + _str(b"torch.FloatStorage")
        + _long(6) + a.tobytes()
    )  # fmt: skip
    assert serialize(a) == expected
    expected = (
        _int(4) + _int(1) + _str(b"V 1") + _str(b"nn.ReLU")
        + _int(3) + _int(2) + _int(2)
        + _int(2) + _str(b"inplace") + _int(5) + _int(1)
        + _int(2) + _str(b"p") + _int(1) + struct.pack("<d", 0.5)
    )  # fmt: skip
    assert serialize(module("nn.ReLU", inplace=True, p=0.5, gone=None)) == expected
    empty = _int(4) + _int(1) + _str(b"V 1") + _str(b"torch.CudaTensor") + _int(0) + _long(1)
    assert serialize(cuda(np.zeros((0, 4), np.float32))) == empty + _int(0)


def test_empty_arrays_and_errors(tmp_path):
    out = _load(tmp_path, {"a": np.zeros((0, 4), np.float32), "b": np.zeros(0, np.int64)})
    assert out[b"a"].shape == (0,) and out[b"a"].dtype == np.float32  # torchfile: shape lost
    assert out[b"b"].shape == (0,) and out[b"b"].dtype == np.int64
    with pytest.raises(ValueError, match="0-d"):
        serialize(np.array(1.0, np.float32))
    with pytest.raises(TypeError, match="dtype bool"):
        serialize(np.zeros(3, bool))
    with pytest.raises(TypeError, match="set"):
        serialize({"x": {1, 2}})
    with pytest.raises(TypeError, match="key"):
        serialize({None: 1})


def test_list_of_tensors_needs_use_list_heuristic_false(tmp_path):
    """torchfile's list conversion compares each element to the table with ``==``; for numpy
    arrays that raises ValueError ("invalid __array_struct__", numpy 1.26 and 2.x alike), so a
    Lua array of tensors (a table output/gradInput) only loads with use_list_heuristic=False."""
    a, b = np.ones(2, np.float32), np.zeros(3, np.float32)
    out = _load(tmp_path, module("nn.CAddTable", gradInput=[a, b]), use_list_heuristic=False)
    assert sorted(out.gradInput) == [1, 2]  # 1-based number keys
    np.testing.assert_array_equal(out.gradInput[1], a)
    np.testing.assert_array_equal(out.gradInput[2], b)


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "model.t7"
    assert save(path, {"v": 1}) == path
    assert save(str(path), {"v": 2}) == path
    assert torchfile.load(str(path))[b"v"] == 2
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save(path, {"v": object()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.t7"]  # no temporary file left
