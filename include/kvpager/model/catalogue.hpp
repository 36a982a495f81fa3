#pragma once
// Finding a model architecture by file or by name. `--model` takes either a path to a YAML file
// or a name from the catalogue (models/*.yaml): the file stem ("deepseek-r1") or the
// model_name ("DEEPSEEK_R1"), case-insensitive.
#include <filesystem>
#include <string>
#include <vector>

#include "kvpager/model/architecture.hpp"

namespace kvpager::model {

// Catalogue folders, in order: $KVPAGER_MODELS_DIR, <exe>/../share/kvpager/models,
// <exe>/../models, the source tree's models/ (compiled in), ./models. Only existing folders.
std::vector<std::filesystem::path> catalogue_dirs();

// A file path when it exists; otherwise a catalogue name. Throws InvalidArgument naming the
// model and listing the catalogue when there is no such model.
ModelArchitecture find_architecture(const std::string& file_or_name,
                                    const std::vector<std::filesystem::path>& dirs);

// Every model file of the catalogue folders (sorted, without duplicates by stem).
std::vector<std::filesystem::path> catalogue_files(const std::vector<std::filesystem::path>& dirs);

}  // namespace kvpager::model
