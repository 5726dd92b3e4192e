// cudaemu stand-in for the CUDA runtime header (tests only).
#pragma once
#include "../cudaemu.h"
