// Each subcommand registers its options and a callback; the callback stores the exit code.
#pragma once

#include <CLI/CLI.hpp>

namespace lightserve::cli {

void register_generate(CLI::App& app);
void register_info(CLI::App& app);
void register_calibrate(CLI::App& app);
void register_eval(CLI::App& app);
void register_bench(CLI::App& app);
void register_serve(CLI::App& app);
void register_export(CLI::App& app);

void set_exit_code(int code);
int exit_code();

}  // namespace lightserve::cli
