// How the PyTorch reference tests hand arrays to their Python side and back: raw
// native-endian files, one array a file (numpy's tofile/fromfile on the other side).
#pragma once

#include <filesystem>
#include <fstream>
#include <vector>

namespace belay::testing {

template <typename T>
void WriteRaw(const std::filesystem::path& p, const std::vector<T>& v) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()),
            static_cast<std::streamsize>(v.size() * sizeof(T)));
}

inline std::vector<double> ReadF64(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary | std::ios::ate);
  std::vector<double> v(static_cast<size_t>(in.tellg()) / sizeof(double));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()),
          static_cast<std::streamsize>(v.size() * sizeof(double)));
  return v;
}

}  // namespace belay::testing
