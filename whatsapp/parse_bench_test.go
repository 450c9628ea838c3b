package whatsapp_test

import (
	"testing"

	"wabridge/whatsapp"
	"wabridge/whatsapp/whatsapptest"
)

func BenchmarkParseWebhook(b *testing.B) {
	body := whatsapptest.NewBuilder().Text("Hallo, ich hätte gern einen Termin am Donnerstag um 10 Uhr. Geht das? Viele Grüße, Anna").Body()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := whatsapp.ParseWebhook(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckWebhook(b *testing.B) {
	body := whatsapptest.NewBuilder().Text("Hallo, ich hätte gern einen Termin am Donnerstag um 10 Uhr. Geht das? Viele Grüße, Anna").Body()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := whatsapp.CheckWebhook(body); err != nil {
			b.Fatal(err)
		}
	}
}
