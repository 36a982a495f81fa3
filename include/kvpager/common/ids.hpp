#pragma once
// Strongly typed ids. A BlockId never converts into a PageId or a LayerId by accident.
#include <compare>
#include <cstdint>
#include <functional>

namespace kvpager {

template <class Tag, class Rep = uint32_t>
struct StrongId {
  using rep = Rep;
  Rep value{};
  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep v) : value(v) {}
  constexpr auto operator<=>(const StrongId&) const = default;
};

using BlockId = StrongId<struct BlockTag, int32_t>;  // int32 so block tables are int32 arrays
using PageId = StrongId<struct PageTag>;
using LayerId = StrongId<struct LayerTag>;
using RankId = StrongId<struct RankTag>;
using InstanceId = StrongId<struct InstanceTag>;

}  // namespace kvpager

template <class Tag, class Rep>
struct std::hash<kvpager::StrongId<Tag, Rep>> {
  size_t operator()(const kvpager::StrongId<Tag, Rep>& id) const noexcept {
    return std::hash<Rep>{}(id.value);
  }
};
