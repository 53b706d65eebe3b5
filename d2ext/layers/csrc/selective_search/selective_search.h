// Selective search (Uijlings et al., IJCV 2013) as the `selectivesearch` package computes it
// with scikit-image: Felzenszwalb-Huttenlocher segmentation, then greedy hierarchical grouping
// by colour (HSV), texture (LBP), size and fill similarity. Plain C++ without torch so the
// algorithm reads on its own; selective_search_cpu.cpp binds it as d2ext operators.
//
// Every step reproduces the reference's arithmetic (same smoothing kernel and border rule,
// same float32 rounding of the inner costs, same histogram bins, same order of the sums and
// the same tie-breaking in the grouping), so on real photos both give the same regions. The
// one known source of difference: numpy sorts the edge costs with an unstable sort, this code
// with a stable one, so edges of exactly equal cost can be visited in another order.
#pragma once
#include <cstdint>
#include <vector>

namespace d2ext {
namespace selective_search {

// Felzenszwalb-Huttenlocher graph segmentation of an HxWxC uint8 image (row-major, channels
// last) as skimage.segmentation.felzenszwalb(img_as_float(image), scale, sigma, min_size):
// Gaussian smoothing (scipy's gaussian_filter, truncate 4, mirror border), 8-connected edges
// weighted by the Euclidean colour distance, greedy merging with threshold scale / 255 / size,
// then merging of components smaller than min_size. Labels are numbered 0.. in the order in
// which their first pixel appears in raster order. Returns the number of labels.
int64_t felzenszwalb(const uint8_t* image, int64_t height, int64_t width, int64_t channels,
                     double scale, double sigma, int64_t min_size, int64_t* labels);

// One region of the hierarchy: its box in inclusive pixel coordinates and pixel count.
struct Region {
  int64_t min_x, min_y, max_x, max_y, size;
};

// Selective search of an HxWx3 uint8 RGB image: the Felzenszwalb regions in label order, then
// one region per merge in the order of the merges (what selectivesearch.selective_search
// returns, duplicates included).
std::vector<Region> selective_search(const uint8_t* rgb, int64_t height, int64_t width,
                                     double scale, double sigma, int64_t min_size);

}  // namespace selective_search
}  // namespace d2ext
