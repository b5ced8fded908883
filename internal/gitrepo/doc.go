// Package gitrepo is the machinery of geo's second kind of replicable, git
// repositories: serving a repository from the primary, fetching it into a
// stage on a secondary, committing the stage, removing a repository, and
// the checksums and checks that verify a copy. It knows nothing of
// registry rows, tokens or events: the engines' repository kind is a thin
// adapter over it (issue 26). It is internal; its API is not stable.
//
// # Why the git binary
//
// Everything here runs Debian's git (2.39 on geo's machines; at least
// MinGitVersion) rather than a pure-Go implementation such as go-git:
//
//   - Fidelity. git http-backend and upload-pack are the reference
//     implementation of the smart HTTP protocol, v0, v1 and v2, and what
//     GitLab's Gitaly runs. go-git's released line (v5) speaks v0/v1 only;
//     server-side v2 upload-pack reached its main branch in 2026
//     (go-git/go-git#264, #2188).
//   - Packs. git receives thin packs and completes them (index-pack
//     --fix-thin), negotiates with the refs of alternates, serves with
//     bitmaps, and writes the on-disk formats every other git tool reads.
//     go-git builds pack indexes in memory: gigabytes for a large
//     repository where git needs a few hundred megabytes, and its
//     UploadPack runs out of memory serving linux.git (src-d/go-git#447,
//     go-git/go-git#1673, #1691).
//   - Verification. git fsck (--connectivity-only, or full) is the
//     definition of a sound repository; go-git has no fsck.
//   - Performance. git's C pack code, zlib and delta search are faster
//     than go-git's on the same repositories (the issues above: 1 min
//     against 4 for one clone), and the raw baseline geo measures itself
//     against is `git clone --mirror` anyway.
//
// The cost is a process per step and a dependency on the binary (tests
// fail under CI, and skip elsewhere, when it is missing: apt-get install
// git). Each git command runs with a controlled environment (see Git): no
// user or system configuration, no inherited GIT_* variables, geo's
// settings and secrets in GIT_CONFIG_COUNT variables, never in argv, and
// its own process group, killed as a whole when the context ends.
//
// # Primary side: serve, checksum
//
// Server.Serve answers git's smart HTTP protocol for ONE repository,
// upload-pack only (clone and fetch), through git http-backend via
// net/http/cgi, and GET .../HEAD (which branch is the default) from the
// HEAD file without running git. The caller authenticates the request (the engine's token,
// bound to a replicable and a record id), resolves the record to its
// repository path, and passes that path: the request's URL only selects
// the protocol step (info/refs or git-upload-pack) from its last segments,
// so no URL can name another repository. git http-backend is given the
// repository itself as GIT_PROJECT_ROOT (with "/." appended, so its
// repository lookup, which tries names with ".git" appended, stays inside
// it) and a PATH_INFO of Serve's own making. Push (anything naming
// receive-pack) answers 403 before git runs, and git is also configured
// with http.receivepack=false. Only Content-Type, Content-Encoding and
// Git-Protocol reach git (GIT_PROTOCOL, for protocol v2); the request's
// Authorization and cookies do not. A body sent chunked (git does for
// large negotiations), which net/http/cgi refuses, is passed on without a
// length, and git http-backend reads it to its end.
//
// Server.Checksum gives the refs checksum the primary's verification
// stores: SHA-256 over the sorted "refname object-id" lines of every ref
// under refs/ (ChecksumRefs, GitLab Geo's approach). The same function
// over a faithful copy gives the same value.
//
// # Secondary side: fetch into a stage, commit, remove, verify
//
// Store holds the secondary's repositories under one root.
//
// Store.Fetch (outside any lock) fetches every ref of the primary's
// repository (+refs/*:refs/*, so force-pushes and deletions are mirrored;
// refs the primary no longer has are left out) into a stage in the
// Store's temporary directory, root/.geo-tmp/<owner>/:
//   - With a live copy, the stage is a new bare repository that borrows
//     the copy's objects (objects/info/alternates) and starts with the
//     copy's refs (a packed-refs file, so that only changed refs are
//     written: with 10,000 refs, 0.75 s a sync instead of 2.7 s). git
//     offers those refs as "haves", so only objects the copy lacks
//     travel, and they are written into the stage alone: the live copy
//     is never written during a fetch. The copy's refs at that moment are
//     recorded; the primary's HEAD is asked for beside the fetch, with
//     one in-process GET (git ls-remote --symref cost two requests and
//     four git processes on the primary: with it an incremental sync of
//     a small repository took twice a raw git fetch).
//   - Without one, the stage is a mirror clone (git clone --mirror), with
//     the remote's configuration removed afterwards.
//
// The Authorization value (the engine's token) reaches git as
// http.extraHeader through GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n, never
// argv, which any user can read in /proc (the HEAD request carries it
// in-process); it is redacted from error messages, and redirects are not
// followed, by git or by the HEAD request, so it never goes elsewhere.
// Cancelling the context kills git's process group and removes the stage.
//
// Stage.Checksum is the staged refs' checksum, to compare with the
// primary's before committing (a mismatch is a failure, not a success).
//
// Stage.Commit (under the engine's row lock, with the claim still
// current) makes the stage live:
//  1. For a live copy: check it is still the directory the stage borrowed
//     from (else ErrStale); move the stage's packs (index last) and loose
//     objects into it, fsynced; then swap the refs in ONE
//     `git update-ref --stdin` transaction (start, prepare, commit) that
//     updates moved refs, creates new ones and deletes the ones the
//     primary no longer has, each only if it still holds the value
//     recorded at fetch time (else ErrStale, and no ref changes); then
//     point HEAD where the primary's points.
//  2. For a new repository: fsync the whole stage and rename it into
//     place (ErrStale if something appeared there meanwhile).
//
// Stage.Abort discards a stage.
//
// Store.Remove (under the row lock) renames the repository out of its
// path into the temporary directory, durably, and then removes it there.
//
// Store.Verify checks a copy: its refs checksum against the primary's
// (ErrChecksumMismatch), then its objects with git fsck: with
// VerifyConnectivity (--connectivity-only: every object the refs reach
// exists; the condition for skipping a download, since matching refs with
// missing objects are not a copy) or VerifyFull (every object's hash and
// every pack's checksum, for periodic re-verification), failing with
// ErrNotConnected.
//
// # Crash safety
//
// A crash at any point leaves the live path holding the old repository,
// the new one, or, for a commit of a live copy, the old refs with some
// extra objects; never a half-made repository, and never a ref to a
// missing object. The engine's row is settled synced only after Commit
// returns, so after any of these the row is still pending or claimed, its
// lease expires, and the next sync (fetch, compare, commit) converges;
// re-verification catches what a sync did not touch.
//
//   - During Fetch: only the stage is written. OpenStore of the next
//     process removes dead owners' temporary directories (flock-based, the
//     protocol blob.Dir uses, so both may share a root).
//   - During Commit of a live copy, while moving objects: the copy has
//     extra, unreferenced objects. A pack's files move index last, so git
//     sees a pack whole or not at all; a crash between its files leaves a
//     pack without index, which git ignores (packs are named by the hash
//     of their content, so if a later commit brings the same pack, its
//     index completes it). Refs are unchanged, so the copy still equals
//     what it was, and the next sync converges.
//   - During the ref transaction: git's files backend locks every ref
//     (prepare) and then renames the lock files into place one by one
//     (commit). A crash in between can leave some refs new and some old,
//     all pointing to objects that exist (objects moved first), and stale
//     .lock files. The refs checksum then differs from the primary's, so
//     the row syncs again; that commit finds the stale locks (update-ref
//     fails with "File exists"), removes them, since the row lock means
//     nobody else writes the copy, and retries once.
//   - Between the ref transaction and HEAD: HEAD names the old default
//     branch (not part of the checksum); the next commit moves it.
//   - During a new repository's rename: rename is atomic; before it the
//     stage is in the temporary directory (removed at restart), after it
//     the repository is complete and durable (fsynced before the rename,
//     parent directories after).
//   - During Remove: the rename out of the path is atomic and fsynced;
//     after it the trash is in the temporary directory, removed by this
//     process or, after a crash, by the next OpenStore. If the process
//     dies after the rename but before the engine's delete of the row
//     commits, the row outlives its copy: the deleted event is consumed
//     again (or the orphan pass finds the record gone) and Remove of a
//     missing repository succeeds; a verification meanwhile reports
//     ErrNotRepository.
//   - After Commit returns and before the engine's settle commits: the
//     copy is new, the row is not synced; its lease expires, the next
//     fetch brings nothing, the stage is unchanged (Stage.Changed is
//     false) and the settle goes through.
//
// # The seam the engines need
//
//	primary:   Server.Serve(w, r, relPath)   behind the token check
//	           Server.Checksum(ctx, relPath) for the primary's verification
//	secondary: Store.Verify(ctx, relPath, primarySum, VerifyConnectivity) == nil
//	                                         → skip the download (synced)
//	           Store.Fetch(ctx, params)      → *Stage, outside any lock
//	           Stage.Checksum() == primarySum, else fail (R6)
//	           Stage.Commit(ctx)             under the row lock (R1, R2);
//	                                         ErrStale → sync again
//	           Stage.Abort()                 when the claim was lost
//	           Store.Remove(ctx, relPath)    under the row lock (deletes, orphans)
//	           Store.Verify(ctx, relPath, primarySum, VerifyFull)
//	                                         re-verification; mismatch → resync
//
// Repository paths are the record's, checked like storage keys; two
// records must not have nested paths (one repository inside another's
// directory).
//
// Not here yet: housekeeping. Every commit that changes something adds a
// pack (and loose refs) to a copy. A periodic `git pack-refs --all` and
// `git repack -d -l` (without -a's dropping of unreachable objects, or
// with git gc's expiry, far longer than any fetch) are for the engine to
// schedule under the row lock: a stage relies on the copy's objects for
// as long as its fetch runs.
package gitrepo
