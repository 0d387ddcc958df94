// The programs' one error path: the exception in flight -> one line on stderr and an exit code.
#pragma once

namespace s6::trainer {

// Call inside a catch block: names `program` and the kind of failure on stderr and returns the
// README's exit code for it (configuration 2, checkpoint or I/O 4, stop signal 5, communication 6,
// anything else 1).
int report_exception(const char* program);

}  // namespace s6::trainer
