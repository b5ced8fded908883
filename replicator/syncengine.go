package replicator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/geoframework/geo/internal/regstore"
	"github.com/geoframework/geo/registry"
	"github.com/geoframework/geo/replicator/transfer"
	"github.com/geoframework/geo/strategy"
)

// syncEngine claims due registry rows within one concurrency budget (per
// type and in total, shared by event-driven and backfill work: R5), runs
// each type's Replicator, renews leases while work goes on (R3) and settles
// rows by the registry's rules (R1, R2, R4, R6).
type syncEngine struct {
	store   *regstore.Store
	reps    map[string]Replicator
	names   []string
	owner   string
	perType int
	total   int
	lease   time.Duration
	poll    time.Duration
	grace   time.Duration
	log     *zap.Logger
	// checksums reads the primary's stored checksums of ids (absent: none
	// known), one statement per claimed batch and type.
	checksums func(ctx context.Context, replicable string, ids []int64) (map[int64]string, error)
	obs       Observer
	paused    func(replicable string) bool

	wake    chan struct{}
	freed   chan struct{}
	settles chan settleReq

	mu       sync.Mutex
	inflight map[string]int
	active   map[registry.Key]*task
	rr       int
}

type task struct {
	claim  regstore.Claim
	cancel context.CancelFunc
	// release frees the task's budget slot, once: when its bytes are
	// handed to the group commit, or when it ends.
	release func()
}

func newSyncEngine(store *regstore.Store, reps map[string]Replicator, names []string, owner string, cfg *SecondaryConfig, obs Observer) *syncEngine {
	return &syncEngine{
		store: store, reps: reps, names: names, owner: owner,
		perType: cfg.SyncCapacityPerType, total: cfg.SyncCapacityTotal,
		lease: cfg.Lease, poll: cfg.PollInterval, grace: cfg.ShutdownGrace,
		log: cfg.Logger, obs: obs,
		wake: make(chan struct{}, 1), freed: make(chan struct{}, 1),
		settles:  make(chan settleReq),
		inflight: map[string]int{}, active: map[registry.Key]*task{},
	}
}

// Wake tells the engine new work may be due, so it claims now instead of at
// the next poll.
func (e *syncEngine) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// InFlight returns the number of syncs running per type.
func (e *syncEngine) InFlight() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.inflight))
	for k, v := range e.inflight {
		out[k] = v
	}
	return out
}

// Running returns the number of syncs running per type: rows claimed and
// being synced or waiting for their settle. Unlike InFlight it leaves out
// the capacity reserved for a claim not yet answered (allocate reserves
// the whole free budget before every claim) and counts a sync whose
// budget slot was freed when its bytes went to the group commit until it
// is settled.
func (e *syncEngine) Running() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k := range e.active {
		out[k.Replicable]++
	}
	return out
}

// allocate spreads the free capacity over the types round-robin, starting
// at a rotating type, skipping types known to have no due work. The
// capacity it hands out is reserved (counted in flight) until the claim
// returns: unreserve gives back what the claim did not fill.
func (e *syncEngine) allocate(dry map[string]bool) []regstore.TypeLimit {
	e.mu.Lock()
	defer e.mu.Unlock()
	used := 0
	for _, n := range e.inflight {
		used += n
	}
	free := e.total - used
	if free <= 0 || (used > 0 && free < e.minClaim()) {
		return nil
	}
	n := len(e.names)
	room := make([]int, n)
	want := make([]int, n)
	order := make([]int, 0, n)
	for i := 0; i < n; i++ {
		j := (e.rr + i) % n
		name := e.names[j]
		if dry[name] || (e.paused != nil && e.paused(name)) {
			continue
		}
		room[j] = e.perType - e.inflight[name]
		if room[j] > 0 {
			order = append(order, j)
		}
	}
	e.rr = (e.rr + 1) % max(n, 1)
	for free > 0 {
		progressed := false
		for _, j := range order {
			if free == 0 {
				break
			}
			if want[j] < room[j] {
				want[j]++
				free--
				progressed = true
			}
		}
		if !progressed {
			break
		}
	}
	var limits []regstore.TypeLimit
	for _, j := range order {
		if want[j] > 0 {
			limits = append(limits, regstore.TypeLimit{Replicable: e.names[j], Limit: want[j]})
			e.inflight[e.names[j]] += want[j]
		}
	}
	return limits
}

// minClaim is the fewest rows worth a claim while other syncs run: half
// the budget one type can use. A claim costs about the same for one row
// as for ten (its transaction, the count trigger, the primary checksum
// lookup), and while the budget turns over fast, claiming each freed slot
// alone made claims of 2.4 rows on average and the most expensive
// statement of a small blob's sync. With nothing in flight any free slot
// is claimed at once, so a lone record never waits for company.
func (e *syncEngine) minClaim() int {
	return max(1, min(e.total, e.perType)/2)
}

// unreserve gives back the capacity allocate reserved for limits that the
// claim did not fill (got rows per type).
func (e *syncEngine) unreserve(limits []regstore.TypeLimit, got map[string]int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range limits {
		e.inflight[l.Replicable] -= l.Limit - got[l.Replicable]
	}
}

// claimPipeline claims may be in flight at once: while one waits for the
// database, slots freed meanwhile are claimed by the next, so a claim's
// round trips do not leave the budget idle.
const claimPipeline = 2

// claimed is the outcome of one claim: what was asked and what was got.
type claimed struct {
	limits []regstore.TypeLimit
	claims []regstore.Claim
	sums   map[registry.Key]string
	// keys are the storage keys resolved for the claimed records (by
	// replicators implementing keyResolver), and staging records them as
	// staged keys while the transfers run.
	keys    map[registry.Key]string
	staging *staging
	err     error
	// gen is the wake generation the claim was sent in: a short claim
	// marks types dry only if no wake or poll came since (it may have
	// been answered from before the work the wake announced).
	gen uint64
}

// claim claims for limits, reads the claimed records' primary checksums,
// resolves their keys and starts staging them (stageClaimed). The claim must not
// be cut by shutdown: a statement cancelled after the server committed it
// would leave rows claimed that this process never learns of (held until
// their lease ends). What it claims runs under workCtx and finishes or is
// released.
func (e *syncEngine) claim(ctx, workCtx context.Context, limits []regstore.TypeLimit) claimed {
	cctx, cancel := detached(ctx, claimTimeout)
	defer cancel()
	claims, err := e.store.Claim(cctx, regstore.ClaimParams{Lease: regstore.Lease{Owner: e.owner, Duration: e.lease}, Limits: limits})
	if err != nil {
		return claimed{limits: limits, err: err}
	}
	// The checksums and the keys are independent reads of the primary's
	// replica: one waits for the other's round trip.
	lctx, lcancel := context.WithTimeout(workCtx, e.lookupTimeout())
	defer lcancel()
	var sums map[registry.Key]string
	done := make(chan struct{})
	go func() { defer close(done); sums = e.primaryChecksums(lctx, claims) }()
	keys := e.resolveClaimed(lctx, claims)
	<-done
	return claimed{limits: limits, claims: claims, sums: sums, keys: keys, staging: e.stageClaimed(workCtx, claims, keys)}
}

// keyResolver is implemented by replicators that store records at
// storage keys and can resolve the keys of many records at once (blob
// types: one strategy.BatchKeyer query, else BlobKey per record,
// concurrently). It returns the keys it found, valid ones only; a record
// left out is looked up again by its sync.
type keyResolver interface {
	resolveKeys(ctx context.Context, ids []int64) map[int64]string
}

// resolveClaimed resolves the keys of the claimed records whose
// replicator can (keyResolver): the syncs then look up no key. A record
// left out is looked up by its sync.
func (e *syncEngine) resolveClaimed(ctx context.Context, claims []regstore.Claim) map[registry.Key]string {
	return byType(claims, func(name string, ids []int64) map[int64]string {
		if r, ok := e.reps[name].(keyResolver); ok {
			return r.resolveKeys(ctx, ids)
		}
		return nil
	})
}

// byType calls lookup once per type with the claimed ids of that type and
// gathers its answers by row key (nil when there are none).
func byType(claims []regstore.Claim, lookup func(name string, ids []int64) map[int64]string) map[registry.Key]string {
	ids := map[string][]int64{}
	for _, c := range claims {
		ids[c.Replicable] = append(ids[c.Replicable], c.ModelID)
	}
	var out map[registry.Key]string
	for name, list := range ids {
		for id, v := range lookup(name, list) {
			if out == nil {
				out = make(map[registry.Key]string, len(claims))
			}
			out[registry.Key{Replicable: name, ModelID: id}] = v
		}
	}
	return out
}

// lookupTimeout bounds the lookups and the staging that follow a claim:
// the claimed rows are renewed only once their tasks start, so well
// inside the lease (and shutdown waits for them).
func (e *syncEngine) lookupTimeout() time.Duration { return min(5*time.Second, e.lease/3) }

// staging is one claimed batch's StageKeys, running while the batch's
// transfers go on.
type staging struct {
	done   chan struct{}
	staged map[registry.Key]bool // written before done is closed
}

// wait waits for the staging to end and reports whether it recorded k's
// key. A nil staging staged nothing.
func (s *staging) wait(k registry.Key) bool {
	if s == nil {
		return false
	}
	<-s.done
	return s.staged[k]
}

// stageClaimed records the resolved keys of a claimed batch as the rows'
// staged keys (StageKeys, one durable transaction) while the transfers
// run: a sync waits for it before its settle, which then publishes
// without a staging transaction of its own, off the group commit's
// critical path.
//
// A claim whose row names bytes at another staged key is not staged here:
// its sync removes those first (ClearStagedKey) and stages at settle. A
// failed staging is logged and changes nothing: the settles stage those
// keys themselves, as for any replicator.
func (e *syncEngine) stageClaimed(workCtx context.Context, claims []regstore.Claim, keys map[registry.Key]string) *staging {
	var stagings []regstore.Staging
	for _, c := range claims {
		key := keys[c.Key()]
		if key != "" && (c.StagedKey == "" || c.StagedKey == key) {
			stagings = append(stagings, regstore.Staging{Claim: c, Key: key})
		}
	}
	if len(stagings) == 0 {
		return nil
	}
	st := &staging{done: make(chan struct{})}
	go func() {
		defer close(st.done)
		ctx, cancel := context.WithTimeout(workCtx, e.lookupTimeout())
		defer cancel()
		staged, err := e.store.StageKeys(ctx, e.owner, stagings)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("staging claimed keys failed: staging at settle instead", zap.Error(err))
			}
			return
		}
		st.staged = staged
	}()
	return st
}

func (e *syncEngine) run(ctx context.Context) error {
	// Work outlives ctx by the shutdown grace period, so in-flight syncs
	// can finish; then it is cancelled and unfinished claims are released.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	renewDone := make(chan struct{})
	go func() { defer close(renewDone); e.renewLoop(workCtx) }()
	// Settlers outlive the work: they stop once every task has settled.
	var settlers sync.WaitGroup
	for range settlerCount {
		settlers.Go(func() { e.settleLoop(context.WithoutCancel(ctx)) })
	}
	defer func() { close(e.settles); settlers.Wait() }()

	dry := map[string]bool{}
	var gen uint64 // bumped by every wake and poll
	claiming := 0
	results := make(chan claimed, claimPipeline)
	// handle starts what a claim got and marks the types it could not
	// fill as dry until the next wake or poll.
	handle := func(r claimed) {
		got := map[string]int{}
		if r.err != nil {
			if ctx.Err() == nil {
				e.log.Warn("claim failed", zap.Error(r.err))
			}
		}
		for _, c := range r.claims {
			got[c.Replicable]++
			e.start(workCtx, &wg, c, r.sums[c.Key()], r.keys[c.Key()], r.staging)
		}
		e.unreserve(r.limits, got)
		// A failed claim waits for the next poll too, rather than retry
		// at once. A claim sent before the last wake or poll proves
		// nothing about the work announced since.
		if r.gen != gen {
			return
		}
		for _, l := range r.limits {
			if got[l.Replicable] < l.Limit {
				dry[l.Replicable] = true
			}
		}
	}
	// A ticker, not a timer re-armed on every pass: while slots turn over
	// faster than the poll interval, dry types (due retries have no wake)
	// are still looked at once per interval.
	poll := time.NewTicker(e.poll)
	defer poll.Stop()
	for ctx.Err() == nil {
		if claiming < claimPipeline {
			if limits := e.allocate(dry); len(limits) > 0 {
				claiming++
				sent := gen
				go func() {
					r := e.claim(ctx, workCtx, limits)
					r.gen = sent
					results <- r
				}()
				continue
			}
		}
		select {
		case <-ctx.Done():
		case r := <-results:
			claiming--
			handle(r)
		case <-e.wake:
			clear(dry)
			gen++
		case <-e.freed:
		case <-poll.C:
			clear(dry)
			gen++
		}
	}
	// Claims still in flight may have committed: what they got runs (or
	// is released) like every other claimed row.
	for ; claiming > 0; claiming-- {
		handle(<-results)
	}

	// Graceful shutdown: let in-flight work finish within the grace period.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(e.grace):
		e.log.Info("shutdown grace period over: releasing in-flight claims")
		cancelWork()
		<-finished
	}
	cancelWork()
	<-renewDone
	return nil
}

// primaryChecksums reads the primary's stored checksums of the claimed
// records, one statement per type. A failed lookup is logged and leaves
// the checksums unknown: the download then proves only the transfer, and
// the row stays verification pending (as with a record never checksummed).
func (e *syncEngine) primaryChecksums(ctx context.Context, claims []regstore.Claim) map[registry.Key]string {
	if e.checksums == nil {
		return nil
	}
	return byType(claims, func(name string, ids []int64) map[int64]string {
		sums, err := e.checksums(ctx, name, ids)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Debug("primary checksum lookup failed", zap.String("replicable", name), zap.Error(err))
			}
			return nil
		}
		return sums
	})
}

func (e *syncEngine) start(workCtx context.Context, wg *sync.WaitGroup, c regstore.Claim, primarySum, key string, stg *staging) {
	tctx, cancel := context.WithCancel(workCtx)
	k := registry.Key{Replicable: c.Replicable, ModelID: c.ModelID}
	t := &task{claim: c, cancel: cancel}
	var once sync.Once
	t.release = func() {
		once.Do(func() {
			e.mu.Lock()
			e.inflight[c.Replicable]--
			e.mu.Unlock()
			select {
			case e.freed <- struct{}{}:
			default:
			}
		})
	}
	// The slot was reserved by allocate.
	e.mu.Lock()
	// The row was claimed again while an older sync of it still runs (an
	// event made it pending meanwhile): that sync's claim is stale and its
	// settle would be refused, so stop it. The slot is the new claim's:
	// renewals must extend its lease, not the old one's.
	if old := e.active[k]; old != nil {
		old.cancel()
	}
	e.active[k] = t
	e.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			cancel()
			t.release()
			// The row leaves the lease renewals only now: until it is
			// settled it is still claimed, downloaded or not.
			e.mu.Lock()
			if e.active[k] == t {
				delete(e.active, k)
			}
			e.mu.Unlock()
		}()
		e.process(workCtx, tctx, t, primarySum, key, stg)
	}()
}

// renewLoop extends the leases of every in-flight claim every lease/3 and
// cancels work whose row was taken away (its claim is no longer current).
func (e *syncEngine) renewLoop(ctx context.Context) {
	every(ctx, e.lease/3, e.log, "lease renewal failed", e.renew)
}

// renew extends the leases of the in-flight claims once and cancels the
// work of those no longer held.
func (e *syncEngine) renew(ctx context.Context) error {
	e.mu.Lock()
	claims := make([]regstore.Claim, 0, len(e.active))
	for _, tk := range e.active {
		claims = append(claims, tk.claim)
	}
	e.mu.Unlock()
	if len(claims) == 0 {
		return nil
	}
	lost, err := e.store.RenewLeases(ctx, regstore.Lease{Owner: e.owner, Duration: e.lease}, claims)
	if err != nil {
		return err
	}
	sent := make(map[registry.Key]int64, len(claims))
	for _, c := range claims {
		sent[c.Key()] = c.Seq
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range lost {
		// Only the claim renewed here: the row may have been claimed
		// again (a newer task) since the claims were read.
		if tk, ok := e.active[k]; ok && tk.claim.Seq == sent[k] {
			tk.cancel()
		}
	}
	return nil
}

// process syncs one claimed row and settles it. key is the record's
// storage key if the claim resolved it, else "", and stg the claimed
// batch's staging of those keys.
func (e *syncEngine) process(workCtx, ctx context.Context, t *task, primarySum, key string, stg *staging) {
	c := t.claim
	rep := e.reps[c.Replicable]
	log := e.log.With(zap.String("replicable", c.Replicable), zap.Int64("model_record_id", c.ModelID))
	start := time.Now()
	// Settling must happen even when work was cancelled: use a context that
	// outlives the task but not forever.
	settleCtx, cancelSettle := detached(ctx, settleTimeout)
	defer cancelSettle()

	if rep == nil {
		e.fail(settleCtx, log, c, fmt.Errorf("%w: %q is not registered on this secondary", strategy.ErrUnknownReplicable, c.Replicable), false, start)
		return
	}
	job := Job{ModelID: c.ModelID, Locator: key, RecordedLocator: c.BlobKey, PrimaryChecksum: primarySum, Repair: c.VerificationFailed}
	for {
		redo := e.syncAndSettle(workCtx, ctx, settleCtx, log, t, rep, job, key, stg, start)
		if !redo {
			return
		}
		// The sync skipped its download because the data was present, and
		// another record's removal took it before this row staged the key,
		// or the local copy a stage was fetched against changed before the
		// commit: the claim is still held, download this time.
		log.Debug("data found present was gone at settle: downloading")
		job.Redownload = true
	}
}

// syncAndSettle runs one try of process: the replicator's sync, then the
// settle. It reports true when the try must be repeated with a download
// (errSkippedBytesGone), having settled nothing.
func (e *syncEngine) syncAndSettle(workCtx, ctx, settleCtx context.Context, log *zap.Logger, t *task, rep Replicator, job Job, key string, stg *staging, start time.Time) bool {
	c := t.claim
	staged, err := rep.Sync(ctx, job)
	if err != nil {
		switch {
		case workCtx.Err() != nil:
			// Shutting down: not a failure of the record.
			if rerr := e.store.Release(settleCtx, e.owner, []regstore.Claim{c}); rerr != nil {
				log.Warn("release failed", zap.Error(rerr))
			}
			e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultReleased, Bytes: 0, Duration: time.Since(start)})
		case errors.Is(err, ErrGone):
			// The record's row and the bytes at its keys that no other
			// row names (R7) go.
			deleted, derr := e.store.DeleteIfClaim(settleCtx, e.owner, c, func(ctx context.Context, key string) error {
				return rep.Remove(ctx, c.ModelID, key)
			})
			if derr != nil {
				log.Warn("removing a record gone from the primary failed", zap.Error(derr))
				e.fail(settleCtx, log, c, derr, false, start)
				return false
			}
			if !deleted {
				// The row changed since the claim (recreated, updated): the
				// newer claim decides; nothing was removed.
				log.Debug("claim superseded while syncing: discarded", zap.Error(err))
				e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultSuperseded, Bytes: 0, Duration: time.Since(start)})
				return false
			}
			log.Debug("record gone or out of scope: removed")
			e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultRemoved, Bytes: 0, Duration: time.Since(start)})
		default:
			e.fail(settleCtx, log, c, err, errors.Is(err, transfer.ErrMissingOnPrimary), start)
		}
		return false
	}
	res := staged.Result()
	if c.StagedKey != "" && c.StagedKey != res.Locator {
		// An earlier sync published bytes at another key without settling:
		// remove them (unless another row names that key, R7), and forget
		// them, before this sync's key is staged in their place
		// (ClearStagedKey).
		held, err := e.store.ClearStagedKey(settleCtx, e.owner, c, func(ctx context.Context, key string) error {
			return rep.Remove(ctx, c.ModelID, key)
		})
		if err != nil || !held {
			if aerr := staged.Abort(); aerr != nil {
				log.Warn("discarding staged data failed", zap.Error(aerr))
			}
		}
		switch {
		case err != nil:
			e.fail(settleCtx, log, c, err, false, start)
			return false
		case !held:
			log.Debug("claim superseded while syncing: discarded")
			e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultSuperseded, Bytes: 0, Duration: time.Since(start)})
			return false
		}
		e.mu.Lock() // renewals read the task's claim
		t.claim.StagedKey = ""
		e.mu.Unlock()
	}
	if stg.wait(c.Key()) {
		e.mu.Lock() // renewals read the task's claim
		t.claim.StagedKey = key
		e.mu.Unlock()
	}
	ok, err := e.settle(t, regstore.SyncedResult{
		BlobKey: res.Locator, Size: res.Size, Checksum: res.Checksum, PrimaryChecksum: res.PrimaryChecksum, Skipped: res.Skipped,
	}, staged.Commit, func(ctx context.Context, key string) error { return rep.Remove(ctx, c.ModelID, key) })
	if err != nil || !ok {
		if aerr := staged.Abort(); aerr != nil {
			log.Warn("discarding staged data failed", zap.Error(aerr))
		}
	}
	switch {
	case err != nil && (errors.Is(err, errSkippedBytesGone) || errors.Is(err, errStaleStage)) && !job.Redownload:
		return true
	case err != nil:
		e.fail(settleCtx, log, c, fmt.Errorf("commit: %w", err), false, start)
	case !ok:
		// The row changed while we worked (an update made it pending again,
		// R1; a delete removed it, R2; or the lease was lost): our bytes are
		// stale or unwanted and were discarded.
		log.Debug("claim superseded while syncing: discarded")
		e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultSuperseded, Bytes: 0, Duration: time.Since(start)})
	default:
		if res.Skipped {
			e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultSkipped, Bytes: 0, Duration: time.Since(start)})
		} else {
			e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultSynced, Bytes: res.Size, Duration: time.Since(start)})
		}
		log.Debug("synced", zap.Int64("bytes", res.Size), zap.Duration("duration", time.Since(start)))
	}
	return false
}

// settlerCount settle batches may be in flight at once, so one batch's
// round trips and fsyncs overlap the next one's.
const settlerCount = 2

// maxSettleBatch bounds the rows settled in one transaction.
const maxSettleBatch = 256

// settleReq asks a settler to settle one successful sync.
type settleReq struct {
	item  regstore.SettleItem
	reply chan regstore.SettleOutcome
}

// settle settles one successful sync through the settlers and returns
// SettleSynced's results. Syncs that finish while a settle transaction is
// in flight are settled together in the next one (group commit): one
// transaction, one WAL flush and four round trips for many rows, each
// with the same checks and under the same row lock as SettleSynced (R1,
// R2, R6).
//
// Once a settler has taken the request, the task's budget slot goes to the
// next claim: the transfer is over, and while the bytes wait for the group
// commit the budget keeps transfers running, so settle batches grow with
// the load. Syncs waiting to be taken keep their slots, so the syncs past
// their transfer are bounded by the budget plus what the settlers hold
// (settlerCount * maxSettleBatch).
func (e *syncEngine) settle(t *task, r regstore.SyncedResult, publish func(context.Context) error, remove func(context.Context, string) error) (bool, error) {
	reply := make(chan regstore.SettleOutcome, 1)
	e.mu.Lock() // renewals read the task's claim
	c := t.claim
	e.mu.Unlock()
	e.settles <- settleReq{item: regstore.SettleItem{Claim: c, Result: r, Publish: publish, Remove: remove}, reply: reply}
	t.release()
	out := <-reply
	return out.Settled, out.Err
}

// settleLoop settles requests in batches until e.settles is closed: it
// takes one request, adds every request already waiting (up to
// maxSettleBatch) and settles them in one transaction.
func (e *syncEngine) settleLoop(ctx context.Context) {
	batch := make([]settleReq, 0, maxSettleBatch)
	items := make([]regstore.SettleItem, 0, maxSettleBatch)
	stagings := make([]regstore.Staging, 0, maxSettleBatch)
	for req := range e.settles {
		batch = append(batch[:0], req)
	more:
		for len(batch) < maxSettleBatch {
			select {
			case r, ok := <-e.settles:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		items = items[:0]
		for _, r := range batch {
			items = append(items, r.item)
		}
		sctx, cancel := context.WithTimeout(ctx, settleTimeout)
		// Record the keys about to be published first, unless the claim
		// did (StageKeys skips those): if the settle does not commit, the
		// row still names the bytes for the next sync or delete to remove.
		stagings = stagings[:0]
		for _, it := range items {
			if it.Publish != nil {
				stagings = append(stagings, regstore.Staging{Claim: it.Claim, Key: it.Result.BlobKey})
			}
		}
		var outs []regstore.SettleOutcome
		if _, err := e.store.StageKeys(sctx, e.owner, stagings); err != nil {
			outs = make([]regstore.SettleOutcome, len(items))
			for i := range outs {
				outs[i].Err = err
			}
		} else {
			outs = e.store.SettleSyncedBatch(sctx, e.owner, items)
		}
		cancel()
		for i, r := range batch {
			r.reply <- outs[i]
		}
		clear(batch)
		clear(items)
		clear(stagings)
	}
}

func (e *syncEngine) fail(ctx context.Context, log *zap.Logger, c regstore.Claim, cause error, missing bool, start time.Time) {
	current, err := e.store.SettleFailed(ctx, e.owner, c, cause.Error(), missing)
	if err != nil {
		log.Warn("recording sync failure failed", zap.Error(err), zap.NamedError("cause", cause))
	}
	if err == nil && !current {
		// The claim was no longer ours (the record changed or was deleted,
		// and the work was cancelled for it): not a failure of the record.
		log.Debug("claim superseded while syncing: discarded", zap.Error(cause))
		e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: ResultSuperseded, Bytes: 0, Duration: time.Since(start)})
		return
	}
	result := ResultFailed
	if missing {
		result = ResultMissingOnPrimary
	}
	e.obs.SyncDone(SyncEvent{Replicable: c.Replicable, ModelID: c.ModelID, Outcome: result, Bytes: 0, Duration: time.Since(start)})
	log.Info("sync failed", zap.Error(cause), zap.Bool("missing_on_primary", missing), zap.Int("retry_count", c.RetryCount+1))
}
