package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// multipartAborter aborts the incomplete multipart uploads a crash leaves
// under the store's upload prefix. They are not objects, so the storage
// driver cannot list them; without this (or a bucket lifecycle rule) their
// parts would be kept, and billed, forever.
type multipartAborter struct {
	client *s3.S3
	bucket string
	prefix string // key prefix of the store's uploads, e.g. "site-a/_uploads/"
}

// newMultipartAborter builds an S3 client from the s3-aws driver's
// parameters (the subset that addresses the bucket).
func newMultipartAborter(params map[string]any) (*multipartAborter, error) {
	bucket := paramString(params, "bucket")
	if bucket == "" {
		return nil, fmt.Errorf("no bucket parameter")
	}
	cfg := &aws.Config{
		// Its own client: given none, the SDK uses http.DefaultClient and,
		// with AWS_CA_BUNDLE set, replaces that process-wide client's
		// Transport.
		HTTPClient:       &http.Client{},
		Region:           aws.String(paramString(params, "region")),
		S3ForcePathStyle: aws.Bool(paramBool(params, "forcepathstyle", false)),
		DisableSSL:       aws.Bool(!paramBool(params, "secure", true)),
	}
	if ep := paramString(params, "regionendpoint"); ep != "" {
		cfg.Endpoint = aws.String(ep)
	}
	if ak := paramString(params, "accesskey"); ak != "" {
		cfg.Credentials = credentials.NewStaticCredentials(ak, paramString(params, "secretkey"), "")
	}
	sess, err := session.NewSession(cfg)
	if err != nil {
		return nil, err
	}
	root := strings.Trim(paramString(params, "rootdirectory"), "/")
	prefix := strings.TrimPrefix(uploadsDir, "/") + "/"
	if root != "" {
		prefix = root + "/" + prefix
	}
	return &multipartAborter{client: s3.New(sess), bucket: bucket, prefix: prefix}, nil
}

// abortOlder aborts the incomplete multipart uploads under the prefix that
// were started before olderThan and returns how many.
func (a *multipartAborter) abortOlder(ctx context.Context, olderThan time.Time) (int, error) {
	type upload struct{ key, id string }
	var stale []upload
	err := a.client.ListMultipartUploadsPagesWithContext(ctx, &s3.ListMultipartUploadsInput{
		Bucket: aws.String(a.bucket),
		Prefix: aws.String(a.prefix),
	}, func(page *s3.ListMultipartUploadsOutput, _ bool) bool {
		for _, u := range page.Uploads {
			if u.Initiated != nil && u.Initiated.Before(olderThan) {
				stale = append(stale, upload{aws.StringValue(u.Key), aws.StringValue(u.UploadId)})
			}
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("list multipart uploads: %w", err)
	}
	n := 0
	for _, u := range stale {
		_, err := a.client.AbortMultipartUploadWithContext(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(a.bucket), Key: aws.String(u.key), UploadId: aws.String(u.id),
		})
		var aerr awserr.Error
		if errors.As(err, &aerr) && aerr.Code() == s3.ErrCodeNoSuchUpload {
			continue // aborted meanwhile (another replica cleaning too)
		}
		if err != nil {
			return n, fmt.Errorf("abort multipart upload of %s: %w", u.key, err)
		}
		n++
	}
	return n, nil
}

func paramString(p map[string]any, k string) string {
	if v, ok := p[k]; ok && v != nil {
		return fmt.Sprint(v)
	}
	return ""
}

func paramBool(p map[string]any, k string, def bool) bool {
	switch v := p[k].(type) {
	case bool:
		return v
	case string:
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	}
	return def
}
