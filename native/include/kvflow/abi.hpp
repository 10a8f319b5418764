// The version of the interface between the addon and its TypeScript side.
// Bump it whenever an export, a method or an argument changes shape; the
// loader refuses an addon whose version differs (ERR_LOAD, "built from
// another kvflow version"). src/binding/abi.ts holds the TypeScript side's
// copy, and test/native/abi.test.ts fails when the two disagree. 7: the
// stream's copyRecord (6 went to a build taken out again: never reuse one).
#pragma once

namespace kvflow {

inline constexpr int kAbiVersion = 7;

}  // namespace kvflow
