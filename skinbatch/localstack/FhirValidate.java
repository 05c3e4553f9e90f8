/*
 * Validates FHIR R4 resources (JSON files) with HAPI FHIR's instance validator, offline.
 *
 * Run as a single-file program on the class path that skinbatch.localstack.fhir_validator fetches:
 *
 *     java -cp 'libs/*' FhirValidate.java a.json b.json ...
 *
 * One JVM validates every file given (the validator takes seconds to warm up, a file then takes
 * milliseconds). For each file it prints one JSON line on stdout:
 *
 *     {"file": "a.json", "issues": [{"severity": "error", "location": "...", "message": "..."}]}
 *
 * and a last line {"done": <number of files>}. Logging goes to stderr.
 *
 * No terminology server is used: SNOMED CT, LOINC and local code systems cannot be checked here, so an
 * unknown code system is reported as a warning (UnknownCodeSystemWarningValidationSupport) rather than
 * an error. Structure, cardinality, data types, invariants and the code systems that ship with the R4
 * specification (UCUM, BCP-47, HL7 terminology) are checked in full.
 */

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import com.google.gson.Gson;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.r5.utils.validation.constants.ReferenceValidationPolicy;

public class FhirValidate {
    public static void main(String[] args) throws Exception {
        FhirContext context = FhirContext.forR4();
        UnknownCodeSystemWarningValidationSupport unknownSystems = new UnknownCodeSystemWarningValidationSupport(context);
        unknownSystems.setNonExistentCodeSystemSeverity(
                ca.uhn.fhir.context.support.IValidationSupport.IssueSeverity.WARNING);
        ValidationSupportChain chain = new ValidationSupportChain(
                new DefaultProfileValidationSupport(context),
                new CommonCodeSystemsTerminologyService(context),
                new InMemoryTerminologyServerValidationSupport(context),
                new SnapshotGeneratingValidationSupport(context),
                unknownSystems);
        FhirInstanceValidator module = new FhirInstanceValidator(chain);
        // Logical references (by identifier, to resources the receiver holds) are the point of these
        // resources; the validator checks their shape, not that it can resolve them.
        module.setValidatorResourceFetcher(null);
        FhirValidator validator = context.newValidator().registerValidatorModule(module);

        Gson gson = new Gson();
        int done = 0;
        for (String name : args) {
            String text = Files.readString(Path.of(name), StandardCharsets.UTF_8);
            ValidationResult result = validator.validateWithResult(text);
            JsonArray issues = new JsonArray();
            for (SingleValidationMessage message : result.getMessages()) {
                JsonObject issue = new JsonObject();
                issue.addProperty("severity", message.getSeverity().getCode());
                issue.addProperty("location", message.getLocationString());
                issue.addProperty("message", message.getMessage());
                issues.add(issue);
            }
            JsonObject line = new JsonObject();
            line.addProperty("file", name);
            line.add("issues", issues);
            System.out.println(gson.toJson(line));
            done++;
        }
        JsonObject last = new JsonObject();
        last.addProperty("done", done);
        System.out.println(gson.toJson(last));
    }
}
