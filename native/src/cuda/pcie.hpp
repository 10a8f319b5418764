// The GPU's PCIe link as the kernel sees it (sysfs), so info() and `kvflow
// doctor` can tell a card running below its link (wrong slot, riser, BIOS
// setting) from a slow transfer path.
#pragma once

#include <string>

#include "kvflow/device.hpp"

namespace kvflow::cuda {

/// "0000:3B:00.0" or "00000000:3b:00.0" -> "0000:3b:00.0", the name sysfs uses.
[[nodiscard]] std::string normalize_pci_bus_id(const std::string& bus_id);

/// PCIe generation of a sysfs link speed ("32.0 GT/s PCIe" -> 5); 0 when unknown.
[[nodiscard]] int pcie_gen_of_speed(const std::string& speed) noexcept;

/// Fills info's pcie_* fields from /sys/bus/pci/devices/<bus_id>/. What cannot
/// be read stays 0 and pcie_note says why. Never throws.
void read_pcie_link(const std::string& bus_id, DeviceInfo& info) noexcept;

}  // namespace kvflow::cuda
