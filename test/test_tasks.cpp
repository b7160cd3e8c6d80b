// The modular-arithmetic tasks against example counts worked out by hand and an independent evaluation of each
// expression, and the seeded splits.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <set>

#include "experiments/training/tasks.h"

using namespace tg;
using Catch::Matchers::ContainsSubstring;

TEST_CASE("task sizes, vocabularies and answers", "[tasks]") {
  struct Expect {
    std::string task;
    std::int64_t p, size, vocab, seq;
  };
  for (const Expect& e : std::vector<Expect>{{"a+b", 97, 9312, 99, 4},
                                            {"a-b", 97, 9312, 99, 4},
                                            {"a*b", 97, 9312, 99, 4},
                                            {"a*a-b", 97, 9312, 100, 6},
                                            {"a*c+b*d-e", 7, 12348, 11, 10}}) {
    CAPTURE(e.task);
    const Dataset d = make_dataset(e.task, e.p);
    CHECK(d.size() == e.size);
    CHECK(d.vocab == e.vocab);
    CHECK(d.seq_len == e.seq);
    // Every answer recomputed from the value tokens; every example distinct; all tokens in range.
    std::set<std::vector<std::int32_t>> seen;
    for (std::int64_t i = 0; i < d.size(); ++i) {
      std::vector<std::int32_t> row(d.inputs.begin() + i * d.seq_len, d.inputs.begin() + (i + 1) * d.seq_len);
      seen.insert(row);
      for (std::int32_t t : row) REQUIRE((t >= 0 && t < d.vocab));
      const long p = e.p;
      long want = 0;
      if (e.task == "a+b") want = (row[0] + row[1]) % p;
      if (e.task == "a-b") want = ((row[0] - row[1]) % p + p) % p;
      if (e.task == "a*b") want = (row[0] * row[1]) % p;
      if (e.task == "a*a-b") {
        REQUIRE(row[0] == row[1]);
        want = ((long(row[0]) * row[1] - row[2]) % p + p) % p;
      }
      if (e.task == "a*c+b*d-e") want = ((long(row[0]) * row[1] + long(row[2]) * row[3] - row[4]) % p + p) % p;
      REQUIRE(d.targets[i] == want);
      REQUIRE(row.back() == d.vocab - 1);  // "=" is the last token
    }
    CHECK(static_cast<std::int64_t>(seen.size()) == d.size());
  }
}

TEST_CASE("the pair layout holds every (a, b) with vocabulary p", "[tasks]") {
  const Dataset d = make_dataset("a+b", 113, TaskLayout::pair);
  CHECK(d.size() == 113 * 113);
  CHECK(d.vocab == 113);
  CHECK(d.seq_len == 2);
  CHECK(d.targets[5 * 113 + 110] == (5 + 110) % 113);
  CHECK_THROWS_WITH(make_dataset("a*a-b", 97, TaskLayout::pair), ContainsSubstring("two operands"));
}

TEST_CASE("the interleaved layout puts each operator between its operands, with the same examples", "[tasks]") {
  for (const std::string task : {"a-b", "a*a-b", "a*c+b*d-e"}) {
    CAPTURE(task);
    const std::int64_t p = task == "a*c+b*d-e" ? 7 : 97;
    const Dataset seq = make_dataset(task, p, TaskLayout::sequence);
    const Dataset mixed = make_dataset(task, p, TaskLayout::interleaved);
    REQUIRE(mixed.size() == seq.size());
    CHECK(mixed.vocab == seq.vocab);
    CHECK(mixed.seq_len == seq.seq_len);
    CHECK(mixed.targets == seq.targets);  // same tuples in the same order: a seed splits both alike
    const long n = mixed.seq_len;
    for (std::int64_t i = 0; i < mixed.size(); ++i) {
      const std::int32_t* r = mixed.inputs.data() + i * n;
      const std::int32_t* s = seq.inputs.data() + i * n;
      long want = 0;
      if (task == "a-b") {  // a - b =
        REQUIRE((r[0] == s[0] && r[1] == p && r[2] == s[1] && r[3] == p + 1));
        want = ((r[0] - r[2]) % p + p) % p;
      } else if (task == "a*a-b") {  // a * a - b =
        REQUIRE((r[0] == s[0] && r[1] == p && r[2] == s[0] && r[3] == p + 1 && r[4] == s[2] && r[5] == p + 2));
        want = ((long(r[0]) * r[2] - r[4]) % p + p) % p;
      } else {  // "a * b + c * d - e =" answered a*c + b*d - e; the sequence layout holds (a, c, b, d, e)
        REQUIRE((r[0] == s[0] && r[2] == s[2] && r[4] == s[1] && r[6] == s[3] && r[8] == s[4]));
        REQUIRE((r[1] == p && r[3] == p + 1 && r[5] == p && r[7] == p + 2 && r[9] == p + 3));
        want = ((long(r[0]) * r[4] + long(r[2]) * r[6] - r[8]) % p + p) % p;
      }
      REQUIRE(mixed.targets[i] == want);
    }
  }
  CHECK(parse_task_layout("interleaved") == TaskLayout::interleaved);
  CHECK_THROWS_WITH(parse_task_layout("mixed"), ContainsSubstring("sequence, interleaved or pair"));
}

TEST_CASE("any p >= 2 works; bad tasks and moduli are clear errors", "[tasks][errors]") {
  CHECK(make_dataset("a*b", 2).size() == 2);
  CHECK(make_dataset("a*c+b*d-e", 2).size() == 8);
  CHECK_THROWS_WITH(make_dataset("a/b", 97), ContainsSubstring("task 'a/b'"));
  CHECK_THROWS_WITH(make_dataset("a+b", 1), ContainsSubstring("modulus 1"));
}

TEST_CASE("splits are disjoint, complete, sized by fraction and fixed by the seed", "[tasks]") {
  const Split s = split_dataset(9312, 0.5, 0.01, 3);
  CHECK(s.outer.size() == 93);
  CHECK(s.train.size() == 4656 - 93);
  CHECK(s.test.size() == 4656);
  std::set<std::int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.outer.begin(), s.outer.end());
  all.insert(s.test.begin(), s.test.end());
  CHECK(all.size() == 9312);
  CHECK(*all.rbegin() == 9311);
  CHECK(split_dataset(9312, 0.5, 0.01, 3).train == s.train);
  CHECK(split_dataset(9312, 0.5, 0.01, 4).train != s.train);
  // The outer part is carved from the train part: the test part depends on the seed and train fraction
  // only (GrokTransfer relies on this to accept a weak model trained without an outer split).
  const Split no_outer = split_dataset(9312, 0.5, 0.0, 3);
  CHECK(no_outer.test == s.test);
  std::set<std::int64_t> train_and_outer(s.train.begin(), s.train.end());
  train_and_outer.insert(s.outer.begin(), s.outer.end());
  CHECK(train_and_outer == std::set<std::int64_t>(no_outer.train.begin(), no_outer.train.end()));
  CHECK_THROWS_WITH(split_dataset(100, 1.0, 0.0, 0), ContainsSubstring("train fraction 1"));
  CHECK_THROWS_WITH(split_dataset(100, 0.5, 0.6, 0), ContainsSubstring("outer fraction 0.6"));
  CHECK_THROWS_WITH(split_dataset(100, 0.5, 0.001, 0), ContainsSubstring("rounds to no outer example"));
}
