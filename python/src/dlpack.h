#pragma once
// DLPack data structures (https://dmlc.github.io/dlpack/latest/c_api.html), written out here
// because Debian has no dlpack development package. The layout is the ABI: it matches the
// upstream dlpack.h of version 1.1 field for field. Only what kvpager exports is declared.
//
// Two forms cross into Python in a PyCapsule:
//  - DLManagedTensor (capsule "dltensor"): the pre-1.0 form, understood by every consumer.
//  - DLManagedTensorVersioned (capsule "dltensor_versioned"): the 1.x form with a version and
//    flags; returned when the consumer passes max_version >= (1, 0) to __dlpack__.
// A consumer renames the capsule to "used_dltensor" / "used_dltensor_versioned" when it takes
// ownership and then calls the deleter itself; otherwise the capsule's destructor must.
#include <cstdint>

extern "C" {

enum DLDeviceType : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
};

struct DLDevice {
  DLDeviceType device_type;
  int32_t device_id;
};

enum DLDataTypeCode : uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
  kDLFloat8_e4m3fn = 10,  // DLPack 1.1
  kDLFloat8_e5m2 = 12,    // DLPack 1.1
};

struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; never null in what kvpager exports
  uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

struct DLPackVersion {
  uint32_t major;
  uint32_t minor;
};

struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned* self);
  uint64_t flags;
  DLTensor dl_tensor;
};

}  // extern "C"

// The version kvpager exports (1.1: the float8 type codes) and the 1.x flag bits.
constexpr uint32_t kDlpackMajorVersion = 1;
constexpr uint32_t kDlpackMinorVersion = 1;
constexpr uint64_t kDlpackFlagReadOnly = 1ull << 0;
