"""KV tensors through DLPack (and numpy's array interface) on the host backend: no copy, the
right dtype, shape and strides for both layouts, the capsule protocol, and lifetime."""

import ctypes
import gc

import numpy as np
import pytest
import torch

from conftest import LAYOUTS, small_cache

# --- reading a capsule with ctypes, as a DLPack consumer written in C would -----------------


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))),
]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


DLManagedTensorVersioned._fields_ = [
    ("major", ctypes.c_uint32),
    ("minor", ctypes.c_uint32),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", DLTensor),
]

_api = ctypes.pythonapi
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]


def read_capsule(capsule, versioned=False):
    name = b"dltensor_versioned" if versioned else b"dltensor"
    assert _api.PyCapsule_IsValid(capsule, name) == 1
    kind = DLManagedTensorVersioned if versioned else DLManagedTensor
    return ctypes.cast(_api.PyCapsule_GetPointer(capsule, name), ctypes.POINTER(kind)).contents


def reservation_mapped(address):
    """True while some mapping of this process covers `address` (the host backend's
    reservation, PROT_NONE or not)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


# --- tests ---------------------------------------------------------------------------------

DTYPES = {
    # name: (DLPack type code, bits, torch dtype name or None)
    "float16": (2, 16, "float16"),
    "bfloat16": (4, 16, "bfloat16"),
    "float32": (2, 32, "float32"),
    "int8": (0, 8, "int8"),
    "uint8": (1, 8, "uint8"),
    "float8_e4m3fn": (10, 8, "float8_e4m3fn"),
    "float8_e5m2": (12, 8, "float8_e5m2"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_capsule_describes_the_view(layout, dtype):
    cache = small_cache(layout, dtype=dtype, num_blocks=64)
    itemsize = cache.itemsize
    view = cache.tensor(3, 1)
    assert view.dtype == dtype and view.device == "cpu" and view.__dlpack_device__() == (1, 0)
    block_stride = cache.block_stride_bytes // itemsize
    if layout == "interleaved":
        # a block is a cell holding every layer's K and V
        assert cache.block_stride_bytes == 4 * 2 * 4 * 2 * 64 * itemsize
    else:
        assert cache.block_stride_bytes == 4 * 2 * 64 * itemsize
    assert view.shape == (64, 4, 2, 64)
    assert view.strides == (block_stride, 128, 64, 1)
    assert view.data_ptr == cache.tensor(0, 0).data_ptr + cache.tensor_offset(3, 1)

    code, bits, _ = DTYPES[dtype]
    for versioned in (False, True):
        capsule = view.__dlpack__(max_version=(1, 0)) if versioned else view.__dlpack__()
        managed = read_capsule(capsule, versioned)
        dl = managed.dl_tensor
        assert (dl.dtype.code, dl.dtype.bits, dl.dtype.lanes) == (code, bits, 1)
        assert (dl.device.device_type, dl.device.device_id) == (1, 0)
        assert dl.data == view.data_ptr and dl.byte_offset == 0
        assert tuple(dl.shape[i] for i in range(dl.ndim)) == view.shape
        assert tuple(dl.strides[i] for i in range(dl.ndim)) == view.strides
        if versioned:
            assert (managed.major, managed.minor, managed.flags) == (1, 0, 0)
        del capsule  # unconsumed: its destructor runs the deleter


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [d for d, v in DTYPES.items() if v[2]])
def test_torch_sees_the_same_memory(layout, dtype):
    torch_dtype = getattr(torch, DTYPES[dtype][2], None)
    if torch_dtype is None:
        pytest.skip(f"torch {torch.__version__} has no {dtype}")
    cache = small_cache(layout, dtype=dtype, num_blocks=64)
    ids = cache.alloc(5)
    t = cache.torch_tensor(2, 0)
    assert t.dtype == torch_dtype and t.shape == (64, 4, 2, 64) and t.device.type == "cpu"
    assert t.stride() == cache.tensor(2, 0).strides
    assert t.data_ptr() == cache.tensor(2, 0).data_ptr
    ones = torch.ones((4, 2, 64), dtype=torch.float32).to(torch_dtype)
    t[ids[1]] = ones
    again = cache.torch_tensor(2, 0)  # a second, independent import
    assert torch.equal(again[ids[1]].to(torch.float32), ones.to(torch.float32))
    assert not torch.any(again[ids[0]].to(torch.float32) != 0)  # fresh pages read zero


@pytest.mark.parametrize("layout", LAYOUTS)
def test_written_through_numpy_read_through_torch_and_back(layout):
    cache = small_cache(layout, dtype="float32", num_blocks=64)
    ids = cache.alloc(3)
    k_np = np.asarray(cache.tensor(1, 0))  # writable view through __array_interface__
    v_t = cache.torch_tensor(1, 1)
    assert k_np.shape == (64, 4, 2, 64)
    assert k_np.strides == tuple(s * 4 for s in cache.tensor(1, 0).strides)
    k_np[ids[0]] = np.arange(4 * 2 * 64, dtype=np.float32).reshape(4, 2, 64)
    k_t = cache.torch_tensor(1, 0)
    assert torch.equal(k_t[ids[0]], torch.arange(4 * 2 * 64, dtype=torch.float32).view(4, 2, 64))
    v_t[ids[2]] = 2.5
    v_np = np.from_dlpack(cache.tensor(1, 1))
    assert np.all(v_np[ids[2]] == 2.5)
    assert v_np.__array_interface__["data"][0] == cache.tensor(1, 1).data_ptr
    # K and V of the same block and layer do not overlap, nor do other layers
    assert np.all(v_np[ids[0]] == 0)
    assert not torch.any(cache.torch_tensor(0, 0)[ids[0]] != 0)


def test_numpy_from_dlpack_is_writable_where_numpy_allows_it():
    cache = small_cache("interleaved", dtype="float16", num_blocks=64)
    arr = np.from_dlpack(cache.tensor(0, 0))
    major, minor = (int(x) for x in np.__version__.split(".")[:2])
    if (major, minor) < (2, 1):
        # numpy before 2.1 marks every DLPack import read-only (it cannot see DLPack 1.x flags)
        assert not arr.flags.writeable
    else:
        assert arr.flags.writeable


def test_no_numpy_type_for_bfloat16_is_a_clear_error():
    cache = small_cache("interleaved", dtype="bfloat16", num_blocks=64)
    with pytest.raises(TypeError, match="bfloat16"):
        np.asarray(cache.tensor(0, 0))


def test_consumed_capsule_is_left_to_its_consumer():
    cache = small_cache("interleaved", num_blocks=64)
    (block,) = cache.alloc(1)
    capsule = cache.tensor(0, 0).__dlpack__()
    t = torch.utils.dlpack.from_dlpack(capsule)  # renames it "used_dltensor"
    assert _api.PyCapsule_IsValid(capsule, b"used_dltensor") == 1
    del capsule  # must not run the deleter: torch owns it now
    gc.collect()
    t[block].fill_(1.0)  # still valid memory
    assert float(t[block].sum()) == 4 * 2 * 64


def test_views_keep_the_kv_space_alive_and_release_it_after():
    cache = small_cache("per-layer", num_blocks=64)
    ids = cache.alloc(2)
    t = cache.torch_tensor(3, 1)
    arr = np.asarray(cache.tensor(2, 0))
    capsule = cache.tensor(1, 0).__dlpack__()
    address = cache.tensor(0, 0).data_ptr
    cache.close()
    del cache
    gc.collect()
    t[ids[0]] = 4.0  # still mapped: the tensor holds the KV space
    arr[ids[1]] = 5
    assert float(t[ids[0]].sum()) == 4.0 * 4 * 2 * 64
    assert reservation_mapped(address)
    del t, arr
    gc.collect()
    assert reservation_mapped(address)  # the capsule still holds it
    del capsule
    gc.collect()
    assert not reservation_mapped(address)


def test_dlpack_arguments():
    cache = small_cache("interleaved", num_blocks=64)
    view = cache.tensor(0, 0)
    with pytest.raises(BufferError):
        view.__dlpack__(copy=True)
    with pytest.raises(BufferError):
        view.__dlpack__(dl_device=(2, 0))
    read_capsule(view.__dlpack__(dl_device=(1, 0), copy=False))
    read_capsule(view.__dlpack__(max_version=(0, 8)))  # legacy capsule for old consumers
    assert read_capsule(view.__dlpack__(max_version=(1, 5)), True).minor == 1
    with pytest.raises(AttributeError):
        _ = view.__cuda_array_interface__  # host memory has no CUDA interface
    assert not hasattr(view, "__cuda_array_interface__")


def test_view_bounds_are_checked():
    cache = small_cache("interleaved", num_blocks=64)
    space = cache.stats()["virtual_bytes"]
    cache.view(0, [space // 2], [1], "float16")
    with pytest.raises(ValueError):
        cache.view(0, [space // 2 + 1], [1], "float16")
    with pytest.raises(ValueError):
        cache.view(1, [4], [1], "float16")  # misaligned
    with pytest.raises(ValueError):
        cache.view(0, [4, 4], [1], "float16")  # strides do not match the shape
    with pytest.raises(ValueError):
        cache.view(0, [4], [-1], "float16")
    with pytest.raises(ValueError):
        cache.tensor(0, 0).with_dtype("float32")  # element size differs
    assert cache.view(space, [0], [1], "uint8").shape == (0,)
