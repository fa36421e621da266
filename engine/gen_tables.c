/* gen_tables.c: the generator's fixed tables: departments with their diagnoses,
 * procedures and DRGs, the comorbidities (Quan 2005 code sets), the three models'
 * coefficients, and the names and places fake identities are made of. Changing a
 * value changes every dataset and truth.json: see engine/GENERATOR.md. */
#include "engine/gen_internal.h"

const gen_dept gen_depts[D__COUNT] = {
    {"medicine",
     {{"A41.9", "871"}, {"N39.0", "690"}, {"N17.9", "683"}, {"K92.2", "378"}, {"E86.0", "641"},
      {"E87.1", "640"}, {"L03.115", "603"}, {"D64.9", "812"}, {NULL, NULL}},
     {"30233N1", "0DJ08ZZ", "02HV33Z", "0DB68ZX", "5A1D70Z", "3E0436Z", NULL},
     1.2, 0, 35.0, 1700.0},
    {"surgery",
     {{"K35.80", "343"}, {"K80.10", "418"}, {"K56.609", "390"}, {"K57.32", "392"}, {"K40.90", "352"},
      {"T81.49XA", "863"}, {"K85.90", "439"}, {NULL, NULL}},
     {"0DTJ4ZZ", "0FT44ZZ", "0DTN0ZZ", "0YU50JZ", "0DN80ZZ", "0WJG4ZZ", NULL},
     1.0, 1, 13.0, 4000.0},
    {"cardiology",
     {{"I21.4", "281"}, {"I48.91", "309"}, {"I20.0", "311"}, {"R07.9", "313"}, {"I44.2", "243"},
      {"I35.0", "267"}, {NULL, NULL}},
     {"02703ZZ", "027034Z", "4A023N7", "5A2204Z", "0JH606Z", "02RF38Z", "B2111ZZ", NULL},
     1.7, 0, 14.0, 3200.0},
    {"orthopedics",
     {{"M17.11", "470"}, {"M16.11", "470"}, {"S72.001A", "481"}, {"M48.061", "460"},
      {"S22.31XA", "184"}, {"M54.50", "552"}, {NULL, NULL}},
     {"0SRD0J9", "0SRC0J9", "0SR9019", "0QS604Z", "0SG00AJ", "0SB20ZZ", NULL},
     0.9, 1, 10.0, 5000.0},
    {"oncology",
     {{"Z51.11", "847"}, {"D70.1", "809"}, {"R50.9", "864"}, {"E83.52", "640"}, {NULL, NULL}},
     {"3E03305", "30233N1", "02HV33Z", "0DJ08ZZ", "0BJ08ZZ", "07B74ZX", NULL},
     1.6, 0, 0.0, 2900.0},
    {"neurology",
     {{"I63.9", "065"}, {"G45.9", "069"}, {"G40.909", "101"}, {"I61.9", "064"}, {"G93.40", "071"},
      {"R41.82", "948"}, {NULL, NULL}},
     {"B030ZZZ", "3E03317", "009U3ZX", "4A10X4Z", "B020ZZZ", "03CG3ZZ", NULL},
     1.3, 0, 8.0, 2300.0},
    {"pulmonology",
     {{"J18.9", "194"}, {"J96.01", "189"}, {"J69.0", "178"}, {"I26.99", "176"}, {"J15.9", "178"},
      {NULL, NULL}},
     {"5A1955Z", "5A1945Z", "0BH17EZ", "0BJ08ZZ", "0W9930Z", "5A09357", NULL},
     1.5, 0, 9.0, 2100.0},
};

const char *const gen_filler_dx[] = {
    "E78.5", "I25.10", "E87.1", "D64.9", "E66.9", "F32.9", "Z79.01", "E03.9", "K21.9", "G47.33",
    "Z87.891", "F17.210", "M81.0", "E55.9", "R26.81", "E87.6", "I48.91", "Z95.5", "Z96.651",
    "H91.90", "I11.9", "M19.90", "Z79.899", "R53.1", "G89.29", "Z86.73"};

const gen_comorb gen_comorbs[CM__COUNT] = {
    {"chf", "congestive heart failure", "chf", "chf", {"I50", NULL},
     {{"I50.9", "291"}, {"I50.22", "291"}, {"I50.32", "291"}, {"I50.42", "291"}, {NULL, NULL}},
     4, -1.65, 0.45, D_CARDIOLOGY},
    {"copd", "chronic obstructive pulmonary disease", "chronic_pulmonary", "chronic_pulmonary",
     {"J44", "J43", NULL},
     {{"J44.9", "190"}, {"J44.1", "190"}, {"J43.9", "190"}, {NULL, NULL}},
     3, -1.60, 0.25, D_PULMONOLOGY},
    {"diabetes", "type 2 diabetes without chronic complication", "diabetes_uncomplicated",
     "diabetes_uncomplicated", {"E11", NULL},
     {{"E11.9", "638"}, {NULL, NULL}},  /* E11.6x, E11.8 are 'complicated' in Elixhauser */
     1, -0.95, 0.10, D_MEDICINE},
    {"renal", "chronic kidney disease", "renal", "renal_failure", {"N18", NULL},
     {{"N18.30", "683"}, {"N18.4", "683"}, {"N18.5", "683"}, {"N18.9", "683"}, {NULL, NULL}},
     4, -1.60, 0.40, D_MEDICINE},
    {"cancer", "solid tumour without metastasis", "malignancy", "solid_tumor_wo_metastasis",
     {"C18", "C25", "C34", "C50", "C67", NULL},
     {{"C34.90", "180"}, {"C18.9", "375"}, {"C25.9", "375"}, {"C67.9", "686"}, {"C50.919", "597"},
      {NULL, NULL}},
     4, -2.00, 0.20, D_ONCOLOGY},
    {"dementia", "dementia", "dementia", NULL, {"F01", "F03", "G30", NULL},
     {{"F03.90", "057"}, {"G30.9", "057"}, {"F01.50", "057"}, {NULL, NULL}},
     3, -3.00, 0.80, D_NEUROLOGY},
    {"liver", "chronic liver disease", "mild_liver", "liver", {"K70", "K74", NULL},
     {{"K70.30", "432"}, {"K74.60", "432"}, {"K74.69", "432"}, {NULL, NULL}},
     3, -3.10, -0.20, D_MEDICINE},
};


const char *const gen_x_names[X__COUNT] = {
    "age_per_10y", "female", "chf", "copd", "diabetes", "renal", "cancer", "dementia", "liver",
    "prior_adm_12m", "emergency"};

const gen_model gen_models[M__COUNT] = {
    {"readmission", -2.60, {0.10, -0.05, 0.35, 0.30, 0.15, 0.35, 0.40, 0.15, 0.40, 0.25, 0.20}, 0.50, 0.70},
    {"mortality", -4.10, {0.45, -0.10, 0.45, 0.30, 0.10, 0.40, 0.90, 0.55, 0.60, 0.10, 0.60}, 0.50, 0.70},
    {"los", 1.30, {0.06, -0.02, 0.12, 0.10, 0.05, 0.10, 0.15, 0.12, 0.10, 0.03, 0.15}, 0.15, 0.25},
};

const gen_state gen_states[] = {
    {"MA", "021", "617"}, {"NY", "100", "212"}, {"PA", "191", "215"}, {"OH", "441", "216"},
    {"IL", "606", "312"}, {"TX", "770", "713"}, {"CA", "900", "213"}, {"FL", "331", "305"},
    {"GA", "303", "404"}, {"WA", "981", "206"}, {"MI", "482", "313"}, {"NC", "276", "919"},
    {"AZ", "850", "602"}, {"CO", "802", "303"}, {"MN", "554", "612"}, {"MO", "631", "314"},
    {"TN", "372", "615"}, {"VA", "232", "804"}, {"NJ", "070", "973"}, {"WI", "532", "414"}};

const char *const gen_first_f[] = {
    "Mary", "Patricia", "Linda", "Barbara", "Elizabeth", "Jennifer", "Maria", "Susan", "Margaret",
    "Dorothy", "Lisa", "Nancy", "Karen", "Betty", "Helen", "Sandra", "Donna", "Carol", "Ruth",
    "Sharon", "Michelle", "Laura", "Sarah", "Kimberly"};
const char *const gen_first_m[] = {
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Charles", "Joseph",
    "Thomas", "Christopher", "Daniel", "Paul", "Mark", "Donald", "George", "Kenneth", "Steven",
    "Edward", "Brian", "Ronald", "Anthony", "Kevin", "Jason"};
const char *const gen_last_names[] = {
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark",
    "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres",
    "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell",
    "Mitchell"};
const char *const gen_cities[] = {
    "Riverside", "Fairview", "Springfield", "Franklin", "Greenville", "Madison", "Clinton",
    "Salem", "Georgetown", "Arlington", "Ashland", "Burlington", "Manchester", "Milton", "Newport",
    "Oxford", "Jackson", "Lakewood", "Dover", "Hudson", "Kingston", "Marion", "Auburn", "Dayton",
    "Lexington", "Milford", "Winchester", "Cleveland", "Centerville", "Bristol"};
const char *const gen_fac_suffix[] = {"General Hospital", "Medical Center",
                                         "Regional Medical Center", "Memorial Hospital",
                                         "University Hospital"};


const char *const gen_slot_specialty[GEN_PROV_PER_FAC] = {
    "internal_medicine", "hospitalist", "general_surgery", "cardiology", "orthopedic_surgery",
    "hematology_oncology", "neurology", "pulmonology", "internal_medicine", "hospitalist"};
const int gen_dept_slot[D__COUNT] = {-1, 2, 3, 4, 5, 6, 7};   /* -1: slots 0, 1, 8, 9 */

const char *const gen_adm_type_s[AT__COUNT] = {"emergency", "urgent", "elective"};
const char *const gen_adm_src_s[AS__COUNT] = {"ed", "physician_referral", "clinic",
                                                 "transfer_hospital", "transfer_snf", "other"};
const char *const gen_disp_s[DS__COUNT] = {"home", "home_health", "snf", "rehab", "long_term",
                                              "transfer_acute", "ama", "hospice", "expired",
                                              "other"};

const char *gen_first_name(int i)
{
    return i < N_FIRST_F ? gen_first_f[i] : gen_first_m[i - N_FIRST_F];
}
