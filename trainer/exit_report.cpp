// Maps the exceptions a run can end with to the README's exit codes, for train, generate, export.
#include "trainer/exit_report.h"

#include <fmt/format.h>

#include <system_error>

#include "core/error.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/dist/error.h"
#include "trainer/exit_codes.h"
#include "trainer/io_error.h"
#include "trainer/signals.h"

namespace s6::trainer {

int report_exception(const char* program) {
  auto say = [program](const char* kind, const char* what, int code) {
    fmt::print(stderr, "{}: {}{}\n", program, kind, what);
    return code;
  };
  try {
    throw;
  } catch (const ConfigError& e) {
    return say("configuration errors:\n", e.what(), kExitConfigError);
  } catch (const CommError& e) {
    return say("communication error: ", e.what(), kExitCommError);
  } catch (const CheckpointError& e) {
    return say("checkpoint error: ", e.what(), kExitCheckpointError);
  } catch (const IoError& e) {
    return say("I/O error: ", e.what(), kExitCheckpointError);
  } catch (const StopRequested& e) {
    return say("", e.what(), kExitInterrupted);
  } catch (const Error& e) {
    return say("error: ", e.what(), kExitInternalError);
  } catch (const std::system_error& e) {  // the console or a file in run.dir could not be written
    return say("I/O error: ", e.what(), kExitCheckpointError);
  } catch (const std::exception& e) {
    return say("unexpected error: ", e.what(), kExitInternalError);
  } catch (...) {
    return say("unexpected error: ", "an exception of unknown type", kExitInternalError);
  }
}

}  // namespace s6::trainer
