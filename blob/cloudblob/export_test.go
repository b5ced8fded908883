package cloudblob

import (
	"context"

	gcblob "gocloud.dev/blob"
)

// SetPageSize sets how many keys one listing request asks for, so tests
// cross page boundaries with few objects.
func SetPageSize(d *Bucket, n int) { d.pageSize = n }

// SetSortList turns the in-memory sorting of listings on or off.
func SetSortList(d *Bucket, on bool) { d.sortList = on }

// OpenGoCloudForTest opens urlstr as OpenBucket does, without checking that
// the bucket can be listed.
func OpenGoCloudForTest(ctx context.Context, urlstr string) (*gcblob.Bucket, error) {
	gb, _, err := openGoCloud(ctx, urlstr)
	return gb, err
}
