package gitrepo

import (
	"os"
	"strconv"
	"testing"
)

// BenchmarkRepoSync syncs GEO_GIT_BENCH_REPOS repositories (default 20) of
// 50 commits through the Server and a Store, against raw `git clone
// --mirror` over the same endpoint at the same concurrency (4), and
// reports both and their ratio (issue 26: at least 0.7).
func BenchmarkRepoSync(b *testing.B) {
	g := requireGit(b)
	repos := 20
	if v, err := strconv.Atoi(os.Getenv("GEO_GIT_BENCH_REPOS")); err == nil && v > 0 {
		repos = v
	}
	for range b.N {
		res, err := Bench(testCtx(b), g, BenchParams{
			Repos:       repos,
			Shape:       RepoShape{Commits: 50, FileSize: 2 << 10, Branches: 3},
			Concurrency: 4,
			Dir:         b.TempDir(),
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Log(res)
		b.ReportMetric(res.Ratio, "ratio")
		b.ReportMetric(float64(res.Repos*res.Rounds)/res.Sync.Seconds(), "syncs/s")
		b.ReportMetric(float64(res.Repos*res.Rounds)/res.Raw.Seconds(), "raw-clones/s")
	}
}
