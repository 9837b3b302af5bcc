package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/syvault/syvault/events"
)

// decodeJSON reads exactly one JSON object into v, refusing unknown fields, trailing data
// and wrong types, with a message that names the field to fix and never echoes values.
func decodeJSON(c echo.Context, v any) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct != "" && !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		return events.Errorf(events.EInvalid, "Send the body as application/json.")
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		if errors.Is(err, echo.ErrStatusRequestEntityTooLarge) {
			return events.Errorf(events.ETooLarge, "The request body is larger than %d KiB.", MaxBodyBytes>>10)
		}
		return events.Errorf(events.EInvalid, "The request body could not be read.")
	}
	return decodeBody(body, v)
}

func decodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return events.Errorf(events.EInvalid, "The request body is empty; send a JSON object.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return events.Errorf(events.EInvalid, "%s", describeJSONError(err))
	}
	if dec.More() {
		return events.Errorf(events.EInvalid, "The body must hold a single JSON object.")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return events.Errorf(events.EInvalid, "The body must hold a single JSON object.")
	}
	return nil
}

func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return "The body must be a JSON object."
		}
		return fmt.Sprintf("Field %q must be of type %s.", typeErr.Field, jsonType(typeErr.Type.String()))
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("The body is not valid JSON (error at byte %d).", syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// DisallowUnknownFields reports the field only in this text; encoding/json has no
		// typed error for it.
		return fmt.Sprintf("Unknown field %s.", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "The body is truncated JSON."
	}
	return "The body is not a valid JSON object."
}

func jsonType(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "integer"
	case strings.Contains(goType, "string"):
		if strings.HasPrefix(goType, "[]") {
			return "array of strings"
		}
		return "string"
	case strings.HasPrefix(goType, "[]"):
		return "array"
	case strings.Contains(goType, "bool"):
		return "boolean"
	}
	return "object"
}
