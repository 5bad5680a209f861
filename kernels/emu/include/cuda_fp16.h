// CUDA emulation build (kernels/emu): stands in for the toolkit header of the same name.
#pragma once
#include "pointins_emu.h"
