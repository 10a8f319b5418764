// Reads the PCIe link of a device from sysfs (see pcie.hpp).
#include "pcie.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kvflow::cuda {

namespace {

// Reads the first line of a sysfs attribute; false with `why` set on failure.
bool read_line(const std::string& path, std::string& out, std::string& why) {
  std::ifstream in(path);
  if (!in) {
    why = path + " is missing or unreadable";
    return false;
  }
  if (!std::getline(in, out)) {
    why = path + " is empty";
    return false;
  }
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back())) != 0) out.pop_back();
  return true;
}

int parse_width(const std::string& text) noexcept {
  // "16", or "x16" on some kernels.
  const char* begin = text.c_str();
  if (*begin == 'x' || *begin == 'X') ++begin;
  char* end = nullptr;
  const long width = std::strtol(begin, &end, 10);
  if (end == begin || width <= 0 || width > 64) return 0;
  return static_cast<int>(width);
}

}  // namespace

std::string normalize_pci_bus_id(const std::string& bus_id) {
  std::string lower;
  lower.reserve(bus_id.size());
  for (const char c : bus_id) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  // The runtime may print the domain with 8 digits; sysfs names it with 4.
  const auto colon = lower.find(':');
  if (colon != std::string::npos && colon > 4) {
    const std::string domain = lower.substr(0, colon);
    if (domain.find_first_not_of('0') >= colon - 4) lower = lower.substr(colon - 4);
  }
  return lower;
}

int pcie_gen_of_speed(const std::string& speed) noexcept {
  const char* begin = speed.c_str();
  char* end = nullptr;
  const double gts = std::strtod(begin, &end);
  if (end == begin) return 0;
  struct Gen {
    double gts;
    int gen;
  };
  constexpr Gen kGens[] = {{2.5, 1}, {5.0, 2}, {8.0, 3}, {16.0, 4}, {32.0, 5}, {64.0, 6}};
  for (const Gen& g : kGens) {
    if (gts > g.gts - 0.05 && gts < g.gts + 0.05) return g.gen;
  }
  return 0;
}

void read_pcie_link(const std::string& bus_id, DeviceInfo& info) noexcept {
  try {
    if (bus_id.empty()) {
      info.pcie_note = "PCIe link unknown: the device reported no PCI bus id";
      return;
    }
    const std::string dir = "/sys/bus/pci/devices/" + bus_id + "/";
    std::vector<std::string> problems;
    auto speed = [&](const char* name, int& gen) {
      std::string text;
      std::string why;
      if (!read_line(dir + name, text, why)) {
        problems.push_back(why);
        return;
      }
      gen = pcie_gen_of_speed(text);
      if (gen == 0) problems.push_back(dir + name + " is '" + text + "', not a known PCIe speed");
    };
    auto width = [&](const char* name, int& lanes) {
      std::string text;
      std::string why;
      if (!read_line(dir + name, text, why)) {
        problems.push_back(why);
        return;
      }
      lanes = parse_width(text);
      if (lanes == 0) problems.push_back(dir + name + " is '" + text + "', not a link width");
    };
    speed("current_link_speed", info.pcie_gen);
    width("current_link_width", info.pcie_width);
    speed("max_link_speed", info.pcie_max_gen);
    width("max_link_width", info.pcie_max_width);

    std::ostringstream note;
    if (!problems.empty()) {
      note << "PCIe link partly unknown (virtual machines often hide it): ";
      for (std::size_t i = 0; i < problems.size(); ++i) note << (i == 0 ? "" : "; ") << problems[i];
    } else if (info.pcie_gen < info.pcie_max_gen || info.pcie_width < info.pcie_max_width) {
      // Idle GPUs lower their link speed to save power; only a link that stays
      // below its maximum under load points at the slot or the BIOS.
      note << "link below its maximum (Gen" << info.pcie_gen << " x" << info.pcie_width << " of Gen"
           << info.pcie_max_gen << " x" << info.pcie_max_width
           << "); an idle GPU lowers its link speed, so read it again during a transfer";
    }
    info.pcie_note = note.str();
  } catch (...) {
    // Allocation failure only: leave whatever was filled in.
  }
}

}  // namespace kvflow::cuda
