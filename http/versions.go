package http

import (
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
)

// A target's or client's version is the stream sequence of its last event. GET and PUT
// answer it as a strong ETag; a PUT that names it in If-Match is made only while it is
// still current (412 otherwise), so an edit made from a read cannot silently undo a
// change another admin made since.

// setVersion sets the answer's ETag to version; none for 0, which no target or client is
// at (an answer that knows no version must not hand out one no update can match).
func setVersion(c echo.Context, version uint64) {
	if version > 0 {
		c.Response().Header().Set("ETag", `"`+strconv.FormatUint(version, 10)+`"`)
	}
}

// ifMatch returns the versions the request's If-Match header names: nil when it has
// none or "*" (the PUT needs the thing to exist, which it does anyway). A weak tag or
// one this server never gave matches nothing (If-Match compares strongly), so it is
// refused with 412 by the update, not here.
func ifMatch(c echo.Context) ([]uint64, error) {
	values := c.Request().Header.Values("If-Match")
	if len(values) == 0 {
		return nil, nil
	}
	var tags []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	if len(tags) == 1 && tags[0] == "*" {
		return nil, nil
	}
	if len(tags) == 0 || len(tags) > 32 {
		return nil, events.Errorf(events.EInvalid, `If-Match must name between 1 and 32 ETags, e.g. "42", or be *.`)
	}
	versions := make([]uint64, 0, len(tags))
	for _, t := range tags {
		weak := strings.HasPrefix(t, "W/")
		t = strings.TrimPrefix(t, "W/")
		if len(t) < 2 || t[0] != '"' || t[len(t)-1] != '"' || strings.Contains(t[1:len(t)-1], `"`) {
			return nil, events.Errorf(events.EInvalid, `If-Match must list quoted ETags as a GET answers them, e.g. "42", or be *.`)
		}
		opaque := t[1 : len(t)-1]
		v, err := strconv.ParseUint(opaque, 10, 64)
		if weak || err != nil || strconv.FormatUint(v, 10) != opaque { // "042" is not "42"
			v = noVersion
		}
		versions = append(versions, v)
	}
	return versions, nil
}

// noVersion stands for a tag that names no version: no target or client is ever at it
// (stream sequences start at 1).
const noVersion = 0
