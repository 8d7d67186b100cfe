#include "app/serve_flags.h"

namespace lightserve::cli {

ServeFlags::ServeFlags(CLI::App* cmd) : cmd_(cmd), values_(serving::config_keys().size()) {
  cmd->add_option("--config", config_path_,
                  "YAML config file (deploy/config.yaml documents every key); flags override it");
  cmd->add_flag("--print-config", print_config_,
                "Print the effective configuration as YAML and exit");
  const serving::ServeConfig defaults;
  const auto& keys = serving::config_keys();
  for (size_t i = 0; i < keys.size(); ++i) {
    const serving::ConfigKey& k = keys[i];
    std::string help = k.help + " [" + k.section + "." + k.key + "]";
    const std::string def = serving::config_value(i, defaults);
    if (!def.empty()) help += " (default: " + def + ")";
    cmd->add_option(k.flag, values_[i], help)->group(k.section)->type_name(k.value_type);
  }
}

Result<serving::ServeConfig> ServeFlags::resolve() const {
  serving::ServeConfig config = serving::config_from_environment();
  if (!config_path_.empty()) {
    if (Status s = serving::load_config_file(config_path_, config); !s) return Error{s.message()};
  }
  const auto& keys = serving::config_keys();
  for (size_t i = 0; i < keys.size(); ++i) {
    if (cmd_->get_option(keys[i].flag)->count() == 0) continue;
    if (auto why = serving::set_config_value(i, values_[i], config)) {
      return Error{keys[i].flag + ": " + *why + ", got '" + values_[i] + "'"};
    }
  }
  if (Status s = serving::finish_config(config); !s) return Error{s.message()};
  return config;
}

}  // namespace lightserve::cli
