#include "selective_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <unordered_map>

namespace d2ext {
namespace selective_search {
namespace {

// numpy's pairwise summation (what ndarray.sum does on a contiguous float64 array), so the
// Gaussian kernel is normalised with the same rounding as scipy's.
double numpy_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = -0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}

// scipy.ndimage.gaussian_filter1d's kernel: radius int(4 sigma + 0.5), normalised.
std::vector<double> gaussian_kernel(double sigma) {
  const int64_t radius = static_cast<int64_t>(4.0 * sigma + 0.5);
  std::vector<double> w(2 * radius + 1);
  const double c = -0.5 / (sigma * sigma);
  for (int64_t x = -radius; x <= radius; ++x) {
    w[x + radius] = std::exp(c * static_cast<double>(x * x));
  }
  const double total = numpy_sum(w.data(), static_cast<int64_t>(w.size()));
  for (auto& v : w) v = v / total;
  return w;
}

// scipy's 'reflect' border (d c b a | a b c d | d c b a) for any distance past the edge.
inline int64_t reflect(int64_t i, int64_t n) {
  const int64_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

// Correlates every line of `data` (count lines of length n, element stride `step`, line
// starts given by `line_start`) with the symmetric kernel, in place, summing in scipy's order.
template <typename LineStart>
void filter_lines(double* data, int64_t count, int64_t n, int64_t step, LineStart line_start,
                  const std::vector<double>& w) {
  const int64_t radius = (static_cast<int64_t>(w.size()) - 1) / 2;
  const double* fw = w.data() + radius;  // fw[j], j in [-radius, radius]
  std::vector<double> line(n + 2 * radius);
  for (int64_t l = 0; l < count; ++l) {
    double* base = data + line_start(l);
    for (int64_t i = -radius; i < n + radius; ++i) {
      line[i + radius] = base[reflect(i, n) * step];
    }
    const double* in = line.data() + radius;
    for (int64_t i = 0; i < n; ++i) {
      double acc = in[i] * fw[0];
      for (int64_t j = -radius; j < 0; ++j) acc += (in[i + j] + in[i - j]) * fw[j];
      base[i * step] = acc;
    }
  }
}

// The 8-connected grid graph. Edge `block * npix + p` joins pixel p to its neighbour below
// (block 0), right (1), below-right (2), or joins p's right and lower neighbours (3). Ordered by
// this index the edges come in skimage's construction order: the four blocks in turn, each in
// raster order.
struct Grid {
  int64_t width, npix;
  void endpoints(uint32_t edge, uint32_t* a, uint32_t* b) const {
    const auto n = static_cast<uint32_t>(npix), w = static_cast<uint32_t>(width);
    const uint32_t block = (edge >= n) + (edge >= 2 * n) + (edge >= 3 * n);
    const uint32_t p = edge - block * n;
    switch (block) {
      case 0:
        *a = p + w;
        *b = p;
        break;
      case 1:
        *a = p + 1;
        *b = p;
        break;
      case 2:
        *a = p + w + 1;
        *b = p;
        break;
      default:
        *a = p + 1;
        *b = p + w;
        break;
    }
  }
  // Calls f(edge) for every edge of an h x (npix / h) grid in index order: below, right,
  // below-right, then right-and-lower neighbours, each block in raster order.
  template <typename F>
  void for_each_edge(int64_t height, F&& f) const {
    const int64_t w = width;
    for (int64_t block = 0; block < 4; ++block) {
      const int64_t y_end = block == 1 ? height : height - 1, x_end = block == 0 ? w : w - 1;
      for (int64_t y = 0; y < y_end; ++y) {
        for (int64_t x = 0; x < x_end; ++x) f(static_cast<uint32_t>(block * npix + y * w + x));
      }
    }
  }
};

// Buffers of one segmentation, kept per thread between calls: a fresh 60 MB per 500-px image
// costs more in page faults than the sort that uses them. Buffers of images over kKeepPixels
// are freed after the call, so a long-lived process does not hold gigabytes for one big image.
constexpr int64_t kKeepPixels = int64_t(1) << 20;

struct Workspace {
  std::vector<double> img, cost;
  std::vector<uint32_t> edges, parent, size;
  std::vector<uint64_t> items, items_tmp;
  std::vector<float> threshold;
  std::vector<uint8_t> crossing;
  std::vector<int64_t> label_of_root;
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// Orders `edges` (grid indices) by `cost`, ties in index order. An LSD radix sort with 11-bit
// digits (buckets that stay in cache) moves 8-byte (32-bit key, index) items; the key maps the
// cost monotonically (0 to 0, the others by their bits relative to the smallest nonzero cost,
// shifted to fit), so it orders all costs but those close enough to share a key, whose runs
// are then finished on the full cost.
void sort_by_cost(std::vector<uint32_t>& edges, const std::vector<double>& cost, Workspace& ws) {
  constexpr int kBits = 11, kPasses = 3;
  constexpr uint64_t kMask = (uint64_t(1) << kBits) - 1;
  const size_t n = edges.size();
  if (n == 0) return;
  auto bits = [&](uint32_t e) {
    uint64_t v;
    std::memcpy(&v, &cost[e], sizeof(double));
    return v;  // costs are >= 0, so their bit patterns order like the values
  };
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const uint32_t e : edges) {
    const uint64_t v = bits(e);
    if (v != 0) lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  int shift = 0;
  while (hi >= lo && ((hi - lo) >> shift) >= 0xFFFFFFFFull) ++shift;
  auto& items = ws.items;
  auto& tmp = ws.items_tmp;
  items.resize(n);
  tmp.resize(n);
  std::vector<size_t> counts(kPasses << kBits, 0);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t v = bits(edges[i]);
    const uint64_t key = v == 0 ? 0 : ((v - lo) >> shift) + 1;
    items[i] = key << 32 | edges[i];
    for (int p = 0; p < kPasses; ++p) ++counts[(p << kBits) + ((key >> (p * kBits)) & kMask)];
  }
  for (int p = 0; p < kPasses; ++p) {
    size_t* c = counts.data() + (p << kBits);
    const int digit = 32 + p * kBits;
    if (c[(items[0] >> digit) & kMask] == n) continue;
    size_t sum = 0;
    for (uint64_t d = 0; d <= kMask; ++d) {
      const size_t c0 = c[d];
      c[d] = sum;
      sum += c0;
    }
    for (const uint64_t it : items) tmp[c[(it >> digit) & kMask]++] = it;
    items.swap(tmp);
  }
  auto& out = edges;
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>(items[i]);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && (items[j] >> 32) == (items[i] >> 32)) ++j;
    if (j - i > 1) {
      std::stable_sort(out.begin() + i, out.begin() + j,
                       [&](uint32_t x, uint32_t y) { return cost[x] < cost[y]; });
    }
    i = j;
  }
}

// Union-find whose root is always the smallest pixel index of its set (skimage's rule).
struct Forest {
  std::vector<uint32_t>& parent;
  Forest(std::vector<uint32_t>& storage, int64_t n) : parent(storage) {
    parent.resize(n);
    std::iota(parent.begin(), parent.end(), 0u);
  }
  uint32_t find(uint32_t n) {
    uint32_t root = n;
    while (parent[root] < root) root = parent[root];
    while (parent[n] > root) {  // path compression
      const uint32_t next = parent[n];
      parent[n] = root;
      n = next;
    }
    return root;
  }
  // Joins the sets with roots a and b; returns the new root.
  uint32_t join(uint32_t a, uint32_t b) {
    const uint32_t root = std::min(a, b);
    parent[a] = root;
    parent[b] = root;
    return root;
  }
};

}  // namespace

int64_t felzenszwalb(const uint8_t* image, int64_t height, int64_t width, int64_t channels,
                     double scale, double sigma, int64_t min_size, int64_t* labels) {
  const int64_t h = height, w = width, c = channels, npix = h * w;
  // img_as_float, then the Gaussian along rows (axis 0), then along columns (axis 1).
  Workspace& ws = workspace();
  auto& img = ws.img;
  img.resize(npix * c);
  const double inv255 = 1.0 / 255.0;
  for (int64_t i = 0; i < npix * c; ++i) img[i] = static_cast<double>(image[i]) * inv255;
  if (sigma > 1e-15) {
    const auto kernel = gaussian_kernel(sigma);
    filter_lines(img.data(), w * c, h, w * c, [](int64_t l) { return l; }, kernel);
    filter_lines(
        img.data(), h * c, w, c, [w, c](int64_t l) { return (l / c) * w * c + l % c; }, kernel);
  }
  // Edge costs: Euclidean distance of the smoothed colours (channels summed in order).
  const Grid grid{w, npix};
  auto& cost = ws.cost;
  auto& edges = ws.edges;
  cost.resize(4 * npix);
  edges.clear();
  grid.for_each_edge(h, [&](uint32_t e) {
    uint32_t pa, pb;
    grid.endpoints(e, &pa, &pb);
    double acc = 0.0;
    for (int64_t k = 0; k < c; ++k) {
      const double d = img[pa * c + k] - img[pb * c + k];
      acc = k == 0 ? d * d : acc + d * d;
    }
    cost[e] = std::sqrt(acc);
    edges.push_back(e);
  });
  sort_by_cost(edges, cost, ws);

  Forest forest(ws.parent, npix);
  auto& size = ws.size;
  size.assign(npix, 1);
  // A segment's merge threshold, its inner cost plus scale / 255 / size, rounded to float32 as
  // skimage computes it; kept per root so an edge costs two loads, not two divisions.
  const double k = scale / 255.0;
  auto& threshold = ws.threshold;
  threshold.assign(npix, static_cast<float>(0.0 + k / 1.0));
  // Edges come in cost order, i.e. at random pixels: fetch the next ones' data ahead.
  constexpr size_t kAhead = 16;
  for (size_t i = 0; i < edges.size(); ++i) {
    if (i + kAhead < edges.size()) {
      const uint32_t f = edges[i + kAhead];
      uint32_t fa, fb;
      grid.endpoints(f, &fa, &fb);
      __builtin_prefetch(&forest.parent[fa]);
      __builtin_prefetch(&forest.parent[fb]);
      __builtin_prefetch(&cost[f]);
    }
    const uint32_t e = edges[i];
    uint32_t pa, pb;
    grid.endpoints(e, &pa, &pb);
    const uint32_t s0 = forest.find(pa), s1 = forest.find(pb);
    if (s0 == s1) continue;
    if (cost[e] < static_cast<double>(std::min(threshold[s0], threshold[s1]))) {
      const uint32_t r = forest.join(s0, s1);
      size[r] = size[s0] + size[s1];
      threshold[r] = static_cast<float>(cost[e] + k / static_cast<double>(size[r]));
    }
  }
  // Every root is its set's smallest pixel, so in pixel order each parent is already flat:
  // one sequential pass points every pixel at its root. Only edges between two segments can
  // still merge (segments only grow); they are marked walking the grid in order, which reads
  // the pixels sequentially, rather than in the random order of the sorted edges.
  for (int64_t p = 0; p < npix; ++p) forest.parent[p] = forest.parent[forest.parent[p]];
  auto& crossing = ws.crossing;
  crossing.assign(4 * npix, 0);
  grid.for_each_edge(h, [&](uint32_t e) {
    uint32_t pa, pb;
    grid.endpoints(e, &pa, &pb);
    crossing[e] = forest.parent[pa] != forest.parent[pb];
  });
  edges.erase(std::remove_if(edges.begin(), edges.end(), [&](uint32_t e) { return !crossing[e]; }),
              edges.end());
  const auto small = static_cast<uint64_t>(std::max<int64_t>(min_size, 0));
  for (const uint32_t e : edges) {
    uint32_t pa, pb;
    grid.endpoints(e, &pa, &pb);
    const uint32_t s0 = forest.find(pa), s1 = forest.find(pb);
    if (s0 == s1) continue;
    if (size[s0] < small || size[s1] < small) {
      const uint32_t r = forest.join(s0, s1);
      size[r] = size[s0] + size[s1];
    }
  }
  // Roots are the smallest pixel of each set, so numbering roots in pixel order numbers the
  // segments by first appearance, as np.unique(roots, return_inverse=True) does.
  auto& label_of_root = ws.label_of_root;
  label_of_root.assign(npix, -1);
  int64_t n_labels = 0;
  for (int64_t p = 0; p < npix; ++p) {
    const uint32_t r = forest.find(static_cast<uint32_t>(p));
    if (label_of_root[r] < 0) label_of_root[r] = n_labels++;
    labels[p] = label_of_root[r];
  }
  if (npix > kKeepPixels) ws = Workspace();
  return n_labels;
}

namespace {

constexpr int kColourBins = 25;  // per HSV channel; only V ever leaves bin 0 (see below)
constexpr int kTextureChannels = 3;

// What the grouping keeps per region: box, size and its normalised histograms.
struct Features {
  Region box;
  // selectivesearch bins H, S and V over (0, 255) on an HSV image computed from 0..255 RGB,
  // so H and S (in [0, 1]) always fall in the first bin and their histograms are exactly
  // [1, 0, ...]: only V's 25 bins vary.
  double value_hist[kColourBins];
  // It bins LBP codes over (0, 1) with 10 bins, so only codes 0 (first bin) and 1 (last bin)
  // are counted, per RGB channel, normalised by the region's size.
  double texture_hist[kTextureChannels][2];
};

// The 8 LBP sample offsets (P = 8, R = 1) rounded to 5 decimals, as skimage rounds them.
constexpr double kLbpRow[8] = {-0.0, -0.70711, -1.0, -0.70711, -0.0, 0.70711, 1.0, 0.70711};
constexpr double kLbpCol[8] = {1.0, 0.70711, 0.0, -0.70711, -1.0, -0.70711, -0.0, 0.70711};

// The code skimage.feature.local_binary_pattern(channel, 8, 1.0) gives pixel (r, c) when it
// is 0 or 1 (all samples below the centre but maybe sample 0), else -1: the only codes the
// texture histogram counts. Sample i is bilinear with zero outside the image; bit i is set
// when sample i >= centre. The axis-aligned samples (even i) are exact pixel values and are
// tested first, which settles most pixels; the diagonal ones are interpolated with skimage's
// arithmetic, as their rounding depends on (r, c).
template <bool kInterior>
int lbp_low_code(const uint8_t* rgb, int64_t h, int64_t w, int64_t ch, int64_t r, int64_t c) {
  auto pixel = [&](int64_t y, int64_t x) -> double {
    if (!kInterior && (y < 0 || y >= h || x < 0 || x >= w)) return 0.0;
    return static_cast<double>(rgb[(y * w + x) * 3 + ch]);
  };
  const double centre = pixel(r, c);
  if (pixel(r - 1, c) >= centre || pixel(r, c - 1) >= centre || pixel(r + 1, c) >= centre) {
    return -1;  // bit 2, 4 or 6 set
  }
  for (int i = 1; i < 8; i += 2) {
    const double rr = static_cast<double>(r) + kLbpRow[i];
    const double cc = static_cast<double>(c) + kLbpCol[i];
    const auto minr = static_cast<int64_t>(std::floor(rr));
    const auto minc = static_cast<int64_t>(std::floor(cc));
    const auto maxr = static_cast<int64_t>(std::ceil(rr));
    const auto maxc = static_cast<int64_t>(std::ceil(cc));
    const double dr = rr - static_cast<double>(minr);
    const double dc = cc - static_cast<double>(minc);
    const double top = (1 - dc) * pixel(minr, minc) + dc * pixel(minr, maxc);
    const double bottom = (1 - dc) * pixel(maxr, minc) + dc * pixel(maxr, maxc);
    const double v = (1 - dr) * top + dr * bottom;
    if (v - centre >= 0) return -1;
  }
  return pixel(r, c + 1) - centre >= 0 ? 1 : 0;
}

double sim_colour(const Features& a, const Features& b) {
  double s = 2.0;  // the H and S histograms intersect fully
  for (int k = 0; k < kColourBins; ++k) s += std::min(a.value_hist[k], b.value_hist[k]);
  return s;
}

double sim_texture(const Features& a, const Features& b) {
  double s = 0.0;
  for (int ch = 0; ch < kTextureChannels; ++ch) {
    for (int k = 0; k < 2; ++k) {
      const double m = std::min(a.texture_hist[ch][k], b.texture_hist[ch][k]);
      s = (ch == 0 && k == 0) ? m : s + m;
    }
  }
  return s;
}

double similarity(const Features& a, const Features& b, double imsize) {
  const double size = 1.0 - static_cast<double>(a.box.size + b.box.size) / imsize;
  const int64_t bb = (std::max(a.box.max_x, b.box.max_x) - std::min(a.box.min_x, b.box.min_x)) *
                     (std::max(a.box.max_y, b.box.max_y) - std::min(a.box.min_y, b.box.min_y));
  const double fill = 1.0 - static_cast<double>(bb - a.box.size - b.box.size) / imsize;
  return sim_colour(a, b) + sim_texture(a, b) + size + fill;
}

Features merge(const Features& a, const Features& b) {
  Features t;
  t.box = {std::min(a.box.min_x, b.box.min_x), std::min(a.box.min_y, b.box.min_y),
           std::max(a.box.max_x, b.box.max_x), std::max(a.box.max_y, b.box.max_y),
           a.box.size + b.box.size};
  const double sa = static_cast<double>(a.box.size), sb = static_cast<double>(b.box.size);
  const double st = static_cast<double>(t.box.size);
  for (int k = 0; k < kColourBins; ++k) {
    t.value_hist[k] = (a.value_hist[k] * sa + b.value_hist[k] * sb) / st;
  }
  for (int ch = 0; ch < kTextureChannels; ++ch) {
    for (int k = 0; k < 2; ++k) {
      t.texture_hist[ch][k] = (a.texture_hist[ch][k] * sa + b.texture_hist[ch][k] * sb) / st;
    }
  }
  return t;
}

// selectivesearch's neighbour test: a corner of b lies strictly inside a's box (asymmetric,
// and applied only as (earlier region, later region)).
bool corner_inside(const Region& a, const Region& b) {
  auto in_x = [&](int64_t x) { return a.min_x < x && x < a.max_x; };
  auto in_y = [&](int64_t y) { return a.min_y < y && y < a.max_y; };
  return (in_x(b.min_x) && in_y(b.min_y)) || (in_x(b.max_x) && in_y(b.max_y)) ||
         (in_x(b.min_x) && in_y(b.max_y)) || (in_x(b.max_x) && in_y(b.min_y));
}

}  // namespace

std::vector<Region> selective_search(const uint8_t* rgb, int64_t height, int64_t width,
                                     double scale, double sigma, int64_t min_size) {
  const int64_t h = height, w = width, npix = h * w;
  thread_local std::vector<int64_t> labels;  // reused like the Workspace
  labels.resize(npix);
  const int64_t n = felzenszwalb(rgb, h, w, 3, scale, sigma, min_size, labels.data());

  // Per-region boxes, sizes and histogram counts in one pass over the pixels.
  std::vector<Region> boxes(n, Region{INT64_MAX, INT64_MAX, -1, -1, 0});
  std::vector<int64_t> value_counts(n * kColourBins, 0), texture_counts(n * 6, 0);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const int64_t p = y * w + x, l = labels[p];
      Region& b = boxes[l];
      b.min_x = std::min(b.min_x, x);
      b.min_y = std::min(b.min_y, y);
      b.max_x = std::max(b.max_x, x);
      b.max_y = std::max(b.max_y, y);
      ++b.size;
      const uint8_t* px = rgb + 3 * p;
      const int v = std::max(px[0], std::max(px[1], px[2]));
      // numpy's 25 equal bins over [0, 255]: edges at multiples of 10.2, the last one closed.
      ++value_counts[l * kColourBins + std::min(v * kColourBins / 255, kColourBins - 1)];
      const bool interior = y > 0 && x > 0 && y + 1 < h && x + 1 < w;
      for (int ch = 0; ch < kTextureChannels; ++ch) {
        const int code = interior ? lbp_low_code<true>(rgb, h, w, ch, y, x)
                                  : lbp_low_code<false>(rgb, h, w, ch, y, x);
        if (code >= 0) ++texture_counts[l * 6 + ch * 2 + code];
      }
    }
  }
  std::vector<Features> regions(n);
  regions.reserve(2 * n);
  for (int64_t l = 0; l < n; ++l) {
    Features& f = regions[l];
    f.box = boxes[l];
    const double s = static_cast<double>(f.box.size);
    for (int k = 0; k < kColourBins; ++k) {
      f.value_hist[k] = static_cast<double>(value_counts[l * kColourBins + k]) / s;
    }
    for (int ch = 0; ch < kTextureChannels; ++ch) {
      for (int k = 0; k < 2; ++k) {
        f.texture_hist[ch][k] = static_cast<double>(texture_counts[l * 6 + ch * 2 + k]) / s;
      }
    }
  }

  // Similarities in insertion order (a Python dict in the reference): the pair with the
  // highest similarity merges next, ties going to the pair inserted last.
  struct Pair {
    int64_t a, b;
    double sim;
    bool alive;
  };
  std::vector<Pair> pairs;
  const double imsize = static_cast<double>(npix);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      if (corner_inside(regions[i].box, regions[j].box)) {
        pairs.push_back({i, j, similarity(regions[i], regions[j], imsize), true});
      }
    }
  }
  int64_t alive = static_cast<int64_t>(pairs.size());
  std::unordered_map<int64_t, size_t> added;  // neighbour -> its new pair, within one merge
  while (alive > 0) {
    size_t best = 0;
    double best_sim = -INFINITY;
    bool found = false;
    for (size_t k = 0; k < pairs.size(); ++k) {
      if (pairs[k].alive && (!found || pairs[k].sim >= best_sim)) {
        best = k;
        best_sim = pairs[k].sim;
        found = true;
      }
    }
    const int64_t i = pairs[best].a, j = pairs[best].b;
    const auto t = static_cast<int64_t>(regions.size());
    regions.push_back(merge(regions[i], regions[j]));
    added.clear();
    const size_t end = pairs.size();
    for (size_t k = 0; k < end; ++k) {
      Pair& p = pairs[k];
      if (!p.alive || (p.a != i && p.a != j && p.b != i && p.b != j)) continue;
      p.alive = false;
      --alive;
      if (k == best) continue;
      const int64_t other = (p.a == i || p.a == j) ? p.b : p.a;
      const double s = similarity(regions[t], regions[other], imsize);
      const auto it = added.find(other);
      if (it == added.end()) {
        added.emplace(other, pairs.size());
        pairs.push_back({t, other, s, true});
        ++alive;
      } else {
        pairs[it->second].sim = s;
      }
    }
    if (pairs.size() > 4 * static_cast<size_t>(alive) + 1024) {  // drop dead pairs, keep order
      pairs.erase(
          std::remove_if(pairs.begin(), pairs.end(), [](const Pair& p) { return !p.alive; }),
          pairs.end());
    }
  }
  if (npix > kKeepPixels) std::vector<int64_t>().swap(labels);
  std::vector<Region> out(regions.size());
  for (size_t k = 0; k < regions.size(); ++k) out[k] = regions[k].box;
  return out;
}

}  // namespace selective_search
}  // namespace d2ext
