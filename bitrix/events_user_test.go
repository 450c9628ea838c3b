package bitrix_test

import (
	"testing"

	"wabridge/bitrix"
)

// TestOperatorFullName: the name a reply is signed with is user[NAME] as
// the event gives it, else the first and last name; an event without a
// user block has none.
func TestOperatorFullName(t *testing.T) {
	for _, fixture := range []string{"bitrix_onimconnectormessageadd.raw", "bitrix_onimconnectormessageadd_file.raw"} {
		ev := parseFixtureEvent(t, fixture)
		if n := ev.Messages.Messages[0].User.FullName(); n != "Klaus Weber" {
			t.Errorf("%s: FullName = %q, want Klaus Weber", fixture, n)
		}
	}
	cases := []struct {
		name string
		user *bitrix.OperatorUser
		want string
	}{
		{"NAME", &bitrix.OperatorUser{Name: "Klaus Weber", FirstName: "K.", LastName: "W."}, "Klaus Weber"},
		{"NAME trimmed", &bitrix.OperatorUser{Name: "  Klaus Weber "}, "Klaus Weber"},
		{"first and last", &bitrix.OperatorUser{FirstName: "Klaus", LastName: "Weber"}, "Klaus Weber"},
		{"first only", &bitrix.OperatorUser{FirstName: "Klaus "}, "Klaus"},
		{"last only", &bitrix.OperatorUser{LastName: "Weber"}, "Weber"},
		{"empty block", &bitrix.OperatorUser{ID: 27}, ""},
		{"no block", nil, ""},
	}
	for _, c := range cases {
		if got := c.user.FullName(); got != c.want {
			t.Errorf("%s: FullName = %q, want %q", c.name, got, c.want)
		}
	}
}
